"""The embedded model organism: a tiny refusing chat model with SAEs at every layer.

``data`` generates the synthetic chat data, ``tokenizer`` trains its BPE tokenizer,
``train`` trains the Llama-family model, ``sae_training`` trains sae_lens TopK SAEs and
``build`` puts it all together (cached by config) for ``refusalscope organism build``.
"""
