"""spec-agent: speculative agent actions for LangGraph."""
