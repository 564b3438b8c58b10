"""refusalscope: find, test and explain the SAE features through which a chat LLM refuses.

Layout (the data walks one way; a module imports only from the ones above it):

* foundation — ``errors``, ``types``, ``config``, ``cache``, ``hooks``, ``model``
  (ChatModel), ``saes`` (SAESet over sae_lens), ``interventions``, ``judges``, ``organism``;
* stages — ``prompts`` → ``direction`` → ``candidates`` → ``attribution`` (LA-IG) →
  ``features`` (F* and baselines) → ``evaluate`` (jailbreak, capability, induction, sweep);
* orchestration — ``artifacts``, ``pipeline``, ``report``, ``outputs``, ``cli``, ``bench``;
  ``reference`` keeps the slow implementations the fast ones are tested against.
"""

__version__ = "0.1.0"
