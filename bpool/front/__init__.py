"""Parts of the HTTP front (`bpool.http_front`): settings and auth, the broker link, chat."""
