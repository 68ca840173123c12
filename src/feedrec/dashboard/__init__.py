"""The web dashboard at ``/dashboard``, served by ``feedrec serve`` next to the API.

Server-rendered pages (Jinja2 templates in ``templates/``, a little JavaScript and Chart.js in
``static/``, shipped with the package): overview, models, experiments, monitoring and the feed
explorer. Pages read through the services the API uses (``views.py``); actions are the admin
API's own routes, called by the page with the admin token (``routes.py``).
"""
