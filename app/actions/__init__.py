"""What a session does to its proposal: edits (comments, user variables), processing jobs, and checking
and saving the context file. Each checks the session's rights on the server before it acts."""
