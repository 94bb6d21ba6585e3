"""Read models: disposable views rebuilt from the event store or the stream."""
