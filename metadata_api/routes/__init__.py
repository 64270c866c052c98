"""HTTP routes, one module per resource; `app.ROUTERS` lists what the app includes."""
