"""Task engines (classification, detection, LLM): a task object and one training loop each."""
