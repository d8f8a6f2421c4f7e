"""realtime_gateway: authenticated, authorized real-time gateways over socket.io.

Compose a :class:`Gateway` into an aiohttp or ASGI app, plug in an
:class:`Authenticator` and an :class:`Authorizer`, and serve namespaces built on
:class:`GatewayNamespace`.
"""

from ._accesslog import RedactingAccessLogger as RedactingAccessLogger
from ._accesslog import RedactingFilter as RedactingFilter
from ._accesslog import uvicorn_log_config as uvicorn_log_config
from ._admin import DEFAULT_ADMIN_PREFIX as DEFAULT_ADMIN_PREFIX
from ._admin import AdminAPI as AdminAPI
from ._admin import AdminResponse as AdminResponse
from ._audit import AuditRecord as AuditRecord
from ._audit import AuditSink as AuditSink
from ._auth import Authenticator as Authenticator
from ._auth import CallbackAuthenticator as CallbackAuthenticator
from ._auth import ChainAuthenticator as ChainAuthenticator
from ._auth import SignedTokenAuthenticator as SignedTokenAuthenticator
from ._authz import AllOf as AllOf
from ._authz import AllowAll as AllowAll
from ._authz import AnyOf as AnyOf
from ._authz import Authorizer as Authorizer
from ._authz import DenyAll as DenyAll
from ._authz import Rule as Rule
from ._authz import RuleAuthorizer as RuleAuthorizer
from ._authz import param_is_role as param_is_role
from ._authz import param_is_user as param_is_user
from ._config import GatewayConfig as GatewayConfig
from ._connection import Connection as Connection
from ._exceptions import AuthenticationFailed as AuthenticationFailed
from ._exceptions import AuthFailureReason as AuthFailureReason
from ._exceptions import ConfigurationError as ConfigurationError
from ._exceptions import GatewayError as GatewayError
from ._exceptions import GatewayNotRunning as GatewayNotRunning
from ._exceptions import InvalidPayload as InvalidPayload
from ._exceptions import LimitExceeded as LimitExceeded
from ._exceptions import NotFound as NotFound
from ._exceptions import PermissionDenied as PermissionDenied
from ._exceptions import RateLimited as RateLimited
from ._gateway import Gateway as Gateway
from ._identity import Handshake as Handshake
from ._identity import Identity as Identity
from ._log import pseudonym as pseudonym
from ._log import redact_room as redact_room
from ._namespace import GatewayNamespace as GatewayNamespace
from ._namespace import event as event
from ._namespace import role_room as role_room
from ._namespace import user_room as user_room
from ._namespaces import ChatMessageIn as ChatMessageIn
from ._namespaces import ChatNamespace as ChatNamespace
from ._namespaces import MainNamespace as MainNamespace
from ._namespaces import NotificationsNamespace as NotificationsNamespace
from ._namespaces import UpdatesNamespace as UpdatesNamespace
from ._namespaces import default_namespaces as default_namespaces
from ._notification import NOTIFICATION_TYPES as NOTIFICATION_TYPES
from ._notification import make_notification as make_notification
from ._recovery import LogEntry as LogEntry
from ._recovery import MemoryRecoveryStore as MemoryRecoveryStore
from ._recovery import OffsetLost as OffsetLost
from ._recovery import RecoverySession as RecoverySession
from ._recovery import RecoveryStore as RecoveryStore
from ._recovery import TooManyMissed as TooManyMissed
from ._recovery_redis import RedisRecoveryStore as RedisRecoveryStore
from ._registry import ConnectionInfo as ConnectionInfo
from ._registry import MemoryRegistry as MemoryRegistry
from ._registry import Registry as Registry
from ._revocation import MemoryRevocationStore as MemoryRevocationStore
from ._revocation import RedisRevocationStore as RedisRevocationStore
from ._revocation import RevocationStore as RevocationStore
from ._rules import REFERENCE_CHANNELS as REFERENCE_CHANNELS
from ._rules import REFERENCE_RESOURCES as REFERENCE_RESOURCES
from ._rules import reference_rules as reference_rules

__version__ = "0.1.0.dev0"

__all__ = [
    "AdminAPI",
    "AdminResponse",
    "AllOf",
    "AllowAll",
    "AnyOf",
    "AuditRecord",
    "AuditSink",
    "AuthFailureReason",
    "AuthenticationFailed",
    "Authenticator",
    "Authorizer",
    "CallbackAuthenticator",
    "ChainAuthenticator",
    "ChatMessageIn",
    "ChatNamespace",
    "ConfigurationError",
    "Connection",
    "ConnectionInfo",
    "DEFAULT_ADMIN_PREFIX",
    "DenyAll",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayNamespace",
    "GatewayNotRunning",
    "Handshake",
    "Identity",
    "InvalidPayload",
    "LimitExceeded",
    "LogEntry",
    "MainNamespace",
    "MemoryRecoveryStore",
    "MemoryRegistry",
    "MemoryRevocationStore",
    "NOTIFICATION_TYPES",
    "NotFound",
    "NotificationsNamespace",
    "OffsetLost",
    "PermissionDenied",
    "REFERENCE_CHANNELS",
    "REFERENCE_RESOURCES",
    "RateLimited",
    "RecoverySession",
    "RecoveryStore",
    "RedactingAccessLogger",
    "RedactingFilter",
    "RedisRecoveryStore",
    "RedisRevocationStore",
    "Registry",
    "RevocationStore",
    "Rule",
    "RuleAuthorizer",
    "SignedTokenAuthenticator",
    "TooManyMissed",
    "UpdatesNamespace",
    "default_namespaces",
    "event",
    "make_notification",
    "param_is_role",
    "param_is_user",
    "pseudonym",
    "redact_room",
    "reference_rules",
    "role_room",
    "user_room",
    "uvicorn_log_config",
]
