"""llmql.train."""
