"""The paper's analyses of the refusal features, each a cached stage with a typed result:
harm categories (common vs category-specific features), jailbreak prompts (which features a
jailbreak suppresses) and out-of-distribution probes (do the features still read harm
inside a jailbreak)."""
