"""llmql.connectors."""
