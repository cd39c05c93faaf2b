"""Calendar, contacts, tasks and notes: the data classes beside email (see ``codec.py``)."""
