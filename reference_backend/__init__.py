"""Reference slow order backend: the stand-in third-party system flashgate drains orders into."""
