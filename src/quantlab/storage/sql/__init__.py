"""SQL storage: typed models, engine factory, migrations and the order store."""
