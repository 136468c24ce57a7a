"""A federation's servers as OS processes, a TCP fault proxy, a raw protocol client, fault
scenarios with an audit of the committed state, and handler fuzzing: shared by
``ffa-lora bench reliability`` / ``bench load`` and the reliability tests."""
