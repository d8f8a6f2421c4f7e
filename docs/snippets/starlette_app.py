import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from realtime_gateway import (
    AdminAPI,
    Gateway,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

gateway = Gateway(
    authenticator=SignedTokenAuthenticator(
        ["a-long-random-secret-key"], salt="my-app.session", max_age=3600
    ),
    authorizer=reference_rules(),
    namespaces=default_namespaces(),
)
current_identity = gateway.identity_dependency()  # 401 without a credential


async def me(request: Request) -> JSONResponse:
    identity = await current_identity(request)
    return JSONResponse({"userId": identity.user_id})


admin = AdminAPI(gateway)
app = Starlette(routes=[Route("/me", me), Mount(admin.prefix, app=admin.asgi_app())])
asgi = gateway.asgi_app(app)  # socket.io under /socket.io, Starlette for the rest

if __name__ == "__main__":
    uvicorn.run(asgi, host="127.0.0.1", port=8000, timeout_graceful_shutdown=3)
