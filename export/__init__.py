"""llmql.export."""
