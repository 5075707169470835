"""llmql.plugin."""
