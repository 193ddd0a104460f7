"""EA-KD inside the trainers LLM users already run.

* :mod:`eakd.integrations.trl`: ``EADistillationTrainer`` and ``EADistillationConfig``, TRL's
  on-policy ``DistillationTrainer`` with its loss replaced by eakd's chunked, entropy-weighted
  token loss (``pip install 'eakd[trl]'``).
* :mod:`eakd.integrations.hf`: ``EAKDTrainer``, the Hugging Face ``Trainer`` for off-policy
  distillation from a frozen teacher with any eakd token loss (``pip install 'eakd[llm]'``).

Neither submodule is imported here: each needs its optional dependency.
"""
