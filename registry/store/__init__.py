"""The facts: the SQL schema and database, migrations, the content-addressed blob store,
manifests, records, the error family, and the home's layout.

Nothing here imports the operations, the service or the CLI (an import contract keeps it so).
"""
