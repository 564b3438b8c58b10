"""The foundation every stage stands on: ChatModel over any HF causal LM, one hook context
manager, interventions as small dataclasses, SAESet through sae_lens, token batches, the
cache, config and file I/O, errors and shared types."""
