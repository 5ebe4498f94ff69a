"""The base every stage imports: settings, database, errors, health, fencing."""
