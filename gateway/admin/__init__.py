"""The admin listener: sales and drain control, always behind the admin bearer token."""
