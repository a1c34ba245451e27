"""Drop-in adapters for agent frameworks; each needs its framework installed (an extra).

- :mod:`kvsessions.integrations.openai_agents` — ``pip install kvsessions[openai-agents]``
- :mod:`kvsessions.integrations.langchain` — ``pip install kvsessions[langchain]``
- :mod:`kvsessions.integrations.adk` — ``pip install kvsessions[adk]``
"""
