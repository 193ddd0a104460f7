"""Task engines: classification, detection and LLM distillation (each imports its own extras)."""
