"""The stores' engines for the tests: `store_uri` runs a test once on SQLite and once on PostgreSQL (a throw-away
server for the session, started by `parkml.central.start_postgres`, a fresh database per test)."""
import secrets, shutil, tempfile
import pytest

@pytest.fixture(scope='session')
def pg_server():
    "A PostgreSQL server on loopback for the session (in /tmp: the server's user must be able to enter its folder)"
    from parkml.central import start_postgres
    folder = tempfile.mkdtemp(prefix='parkml-pg-')
    pg = start_postgres(folder)
    yield pg
    pg.stop()
    shutil.rmtree(folder, ignore_errors=True)

@pytest.fixture
def pg_db(pg_server):
    "URI of a new, empty database on the session's server, dropped after the test"
    import psycopg
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server.uri, autocommit=True) as con: con.execute(f'CREATE DATABASE {name}')
    yield pg_server.uri_for(name)
    with psycopg.connect(pg_server.uri, autocommit=True) as con: con.execute(f'DROP DATABASE {name} WITH (FORCE)')

@pytest.fixture(params=['sqlite', 'postgresql'])
def store_uri(request, tmp_path):
    "A URI for a new store: a SQLite file in tmp_path, or a fresh PostgreSQL database (started only when asked for)"
    if request.param == 'sqlite': return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue('pg_db')

def sql(uri: str, stmt: str, params=()):
    "Run one statement on the store's database directly, as someone with write access to it would; rows if any"
    if uri.startswith('sqlite:'):
        import sqlite3
        from contextlib import closing
        with closing(sqlite3.connect(uri[len('sqlite://'):])) as con, con:
            return con.execute(stmt, params).fetchall()
    import psycopg
    with psycopg.connect(uri, autocommit=True) as con:
        cur = con.execute(stmt.replace('?', '%s'), params)
        return cur.fetchall() if cur.description else []
