"""SPoT on a prompt library: store prompts, compare them, retrieve sources, transfer."""
