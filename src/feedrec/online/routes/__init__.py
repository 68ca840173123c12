"""The API's routes, one module each; ``feedrec.online.api.create_app`` assembles them."""
