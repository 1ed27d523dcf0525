"""The local stack without Docker: the processes the containers run (`stack`), `amosync dev`
in the foreground (`run`) and what a person does against the emulators (`flows`)."""
