"""The response cache: HTTP's rules for keeping answers (control), where they are kept
(store), and the terminal step that serves them (responses)."""
