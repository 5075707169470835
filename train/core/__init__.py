"""The ground floor every llmql package imports, torch-free: errors and what every command shares, the device
policy, typed configs, prompts and tokenisation, chunking, batching, [E] states, and the encoder and QL-scorer
bases with their protocols. The rest of `llmql.train` is the training itself (and torch)."""
