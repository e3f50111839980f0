"""TensorBoard: the logs a training run writes (dlintro.board.writer, imports TensorFlow) and the
server behind `dlintro board` (dlintro.board.server, re-exported here; no TensorFlow import)."""

from dlintro.board.server import HOST, has_logs, launch

__all__ = ["HOST", "has_logs", "launch"]
