def check_env(env):
    raise NotImplementedError
