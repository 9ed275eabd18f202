"""The API's routers, one per resource: health, models, images, clips and jobs, sessions, stream."""
