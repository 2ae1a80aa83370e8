# Octopus's Python script helpers, defined before a step's script runs (see variables.rs).
import base64 as __cuttle_base64, json as __cuttle_json, sys as __cuttle_sys
octopusvariables = __cuttle_json.loads(__cuttle_base64.b64decode('@VARIABLES@').decode('utf-8'))
__cuttle_by_lower_name = {k.lower(): v for k, v in octopusvariables.items()}
def __cuttle_b64(value):
    return __cuttle_base64.b64encode(str(value).encode('utf-8')).decode('ascii')
def get_octopusvariable(name):
    return __cuttle_by_lower_name[name.lower()]
def set_octopusvariable(name, value, sensitive=False):
    extra = " sensitive='{}'".format(__cuttle_b64('True')) if sensitive else ''
    print("##octopus[setVariable name='{}' value='{}'{}]".format(__cuttle_b64(name), __cuttle_b64(value), extra), flush=True)
def fail_step(message=None):
    if message:
        print("##octopus[resultMessage message='{}']".format(__cuttle_b64(message)), flush=True)
    __cuttle_sys.exit(1)
def __cuttle_write(category, message):
    print('##octopus[stdout-{}]'.format(category))
    print(message)
    print('##octopus[stdout-default]', flush=True)
def write_verbose(message): __cuttle_write('verbose', message)
def write_highlight(message): __cuttle_write('highlight', message)
def write_wait(message): __cuttle_write('wait', message)
def write_warning(message): __cuttle_write('warning', message)
def new_octopusartifact(path, name=None):
    import os
    print("##octopus[createArtifact path='{}' name='{}']".format(__cuttle_b64(os.path.abspath(path)), __cuttle_b64(name or os.path.basename(path))), flush=True)
def __cuttle_run(source, name):
    code = compile(source, name, 'exec')
    scope = dict(globals())
    scope['__name__'] = '__main__'
    scope['__file__'] = name
    exec(code, scope)
