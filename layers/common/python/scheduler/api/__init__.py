"""HTTP adapters: powertools routers for each API function, and the resolver they share."""
