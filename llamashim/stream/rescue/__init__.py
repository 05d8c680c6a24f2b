"""Tool-call rescue (pure): tool calls that a model wrote as text in its own markup, which llama-server's parser did
not recognise, turned into proper tool calls — in a whole answer (:func:`rescue_text`, :func:`rescue_reply`) and in a
stream (:class:`ToolCallRescue`); their arguments repaired against the offered schema (:func:`repair_arguments`).

One module per markup family (``hermes``, ``qwen_xml``, ``glm``, ``mistral``, ``llama``, ``deepseek``, ``harmony``,
``kimi``, ``granite``, ``command_r``, ``minimax``), one detector (``detect``) that decides what is a call and what
stays text, the stream stage (``stage``) and the reply rescue (``reply``).
"""

from llamashim.stream.rescue.args import repair_arguments
from llamashim.stream.rescue.base import Offered, ToolCall
from llamashim.stream.rescue.detect import MAX_HOLD, Scanner, rescue_text
from llamashim.stream.rescue.reply import rescue_reply
from llamashim.stream.rescue.stage import ToolCallRescue

__all__ = ["MAX_HOLD", "Offered", "Scanner", "ToolCall", "ToolCallRescue", "repair_arguments", "rescue_reply",
           "rescue_text"]
