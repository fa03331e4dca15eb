"""What ops use on sale day: the admin API client, capacity planning and status views."""
