"""The PostgreSQL driver (psycopg 3 and psycopg_pool): for servers and many processes."""
