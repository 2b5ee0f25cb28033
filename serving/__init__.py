"""The path from a request's values to streamed tokens: the comparison pipeline, the decoding loop, the batched
forward, the slot pool, request validation and the controls table, threads."""
