"""The embedded model organism: a tiny refusing chat model with SAEs at every layer.

``data`` generates the synthetic chat data (``requests`` builds each prompt and its
reference response, ``sampling`` decides what is trained on and what is held out),
``tokenizer`` trains its BPE tokenizer, ``train`` trains the Llama-family model,
``sae_training`` trains sae_lens BatchTopK or TopK SAEs, ``judge`` scores its answers
and ``build`` puts it all together (cached by config) for ``refusalscope organism build``.
"""
