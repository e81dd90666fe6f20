from sweep import moved

moved.install()
