"""Assistants over the Model Context Protocol: the cart as an MCP server at ``/mcp``.

The contract, in one place:

* **An MCP session** is what the official SDK's stateful Streamable HTTP transport creates at
  ``initialize`` (the ``Mcp-Session-Id``). It is the only way in: a request without one, with an unknown
  or expired one, or with one opened under another credential is refused; nothing falls back to a
  shared cart. Each session has its own cart (a stored conversation), unless it presents an assistant
  token, which opens exactly one conversation of the web chat (made in the page, ``ui/assistant.py``).
* **State** lives where the chat's does: one :class:`~memory.session.Session` per (MCP session, host
  conversation hint) in the process-wide ``SessionRegistry`` under an
  :class:`~mcp_server.keys.McpSessionKey`, and the cart in the conversation's checkpointed agent state.
* **Modules:** ``http.py`` (the endpoint and its checks), ``service.py`` (built once, SDK lifetime),
  ``tools.py`` (the five tools), ``carts.py`` (which cart, and the actions on it), ``tokens.py``
  (assistant tokens), ``arguments.py`` (argument checks), ``keys.py`` (registry keys).

Named ``mcp_server`` so that it never shadows the SDK's ``mcp`` package.
"""
