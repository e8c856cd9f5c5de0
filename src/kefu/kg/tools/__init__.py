"""Business tools the model may call (OpenAI function-calling schemas), each scoped to the authenticated customer,
behind an ``OrderBackend`` a shop replaces with its own order system.

``backends`` (the order systems), ``schemas`` (tool arguments and their function-calling schemas), ``toolbox`` (the
dispatch, per customer), ``returns`` (the after-sales return policy).
"""

from kefu.kg.tools.backends import (HTTPOrderBackend, OrderBackend, OrderBackendError, SQLiteOrderBackend,
                                    backend_from_config)
from kefu.kg.tools.returns import return_eligibility
from kefu.kg.tools.schemas import TICKET_KINDS, TOOL_MODELS, TOOL_SCHEMAS
from kefu.kg.tools.toolbox import ToolBox

__all__ = ["HTTPOrderBackend", "OrderBackend", "OrderBackendError", "SQLiteOrderBackend", "TICKET_KINDS",
           "TOOL_MODELS", "TOOL_SCHEMAS", "ToolBox", "backend_from_config", "return_eligibility"]
