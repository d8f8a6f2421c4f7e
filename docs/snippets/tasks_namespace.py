from typing import Any, Literal

import attrs

from realtime_gateway import (
    Connection,
    GatewayNamespace,
    NotFound,
    Rule,
    RuleAuthorizer,
    default_namespaces,
    event,
    reference_rules,
)


@attrs.frozen
class NewTask:
    """The `task:create` payload: `{title, priority, patientId?}`."""

    title: str = attrs.field(validator=attrs.validators.max_len(200))
    priority: Literal["low", "high"] = "low"
    patient_id: str | None = attrs.field(default=None, alias="patientId")


class TasksNamespace(GatewayNamespace):
    """`/tasks`: a ward's to-do list, shared by everyone in the `tasks` room."""

    def __init__(self) -> None:
        super().__init__("/tasks")
        self.tasks: dict[str, NewTask] = {}

    async def on_connected(self, conn: Connection) -> None:
        if conn.identity.has_role("nurse", "doctor"):
            await self.join(conn, "tasks", action=None)  # the namespace's own decision

    @event("task:create", payload=NewTask)
    async def create(self, conn: Connection, task: NewTask) -> dict[str, Any]:
        await self.gateway.authorize(conn.identity, "send", "tasks")  # else: forbidden
        task_id = str(len(self.tasks) + 1)
        self.tasks[task_id] = task
        await self.gateway.emit_to_room(
            "tasks", "task:created", {"id": task_id, "title": task.title}, namespace="/tasks"
        )
        return {"taskId": task_id}  # the ack: {"success": true, "taskId": "1"}

    @event("task:done", payload=str)
    async def done(self, conn: Connection, task_id: str) -> dict[str, Any]:
        await self.gateway.authorize(conn.identity, "send", "tasks")
        if self.tasks.pop(task_id, None) is None:
            raise NotFound("No such task")  # the ack: {"success": false, "code": "not_found", ...}
        return {}


namespaces = [*default_namespaces(), TasksNamespace()]
# Any user may connect to /tasks (the reference rules' namespaces); who may send is a rule.
authorizer = reference_rules(namespaces=[n.namespace for n in namespaces]) + RuleAuthorizer(
    [Rule(actions="send", target="tasks", roles=("nurse", "doctor"))]
)
