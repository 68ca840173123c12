"""The online world: serve feeds from the production bundle, take events back in. Never imports offline/."""
