from realtime_gateway import AnyOf, Identity, PermissionDenied, reference_rules


class OwnWardAuthorizer:
    """A nurse may join the room of the ward she works on (her identity's `ward`)."""

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        kind, _, ward = target.partition(":")
        if (
            action == "join"
            and kind == "ward"
            and identity.has_role("nurse")
            and identity.attributes.get("ward") == ward
        ):
            return  # allowed
        raise PermissionDenied(action, target, reason="not the nurse's own ward")


# Either may allow: the reference rules for everything else, this rule for wards.
authorizer = AnyOf(reference_rules(), OwnWardAuthorizer())
