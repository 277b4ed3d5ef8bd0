/* A measuring probe for bench/lean_loop.py, not product code: one request's head parsed, its
 * environ built, the app called and its response sent, in C, called once per request from a
 * Python epoll loop. It has a few of the HTTP core's checks (token characters, the request
 * line, controls in values and response headers) and none of its limits, timeouts or error
 * answers: a malformed request raises and the loop closes the connection. It answers one
 * question: what a compiled core, with the worker left in Python, would cost per request
 * (docs/benchmarks.md, 2026-12-03). Built by lean_loop.py with the running interpreter's
 * headers; a Python loop module, "probecore". */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>

static PyObject *str_REQUEST_METHOD, *str_PATH_INFO, *str_QUERY_STRING, *str_SERVER_PROTOCOL,
    *str_RAW_URI, *str_wsgi_input, *str_http11, *str_http10;

static int is_tchar(unsigned char c) {
    if (c >= 'a' && c <= 'z') return 1;
    if (c >= 'A' && c <= 'Z') return 1;
    if (c >= '0' && c <= '9') return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static PyObject *start_response_impl(PyObject *holder, PyObject *args) {
    PyObject *status, *headers, *exc_info = NULL;
    if (!PyArg_ParseTuple(args, "OO|O", &status, &headers, &exc_info)) return NULL;
    if (PyList_SetSlice(holder, 0, PY_SSIZE_T_MAX, NULL) < 0) return NULL;
    if (PyList_Append(holder, status) < 0 || PyList_Append(holder, headers) < 0) return NULL;
    Py_RETURN_NONE;
}
static PyMethodDef start_response_def = {"start_response", start_response_impl, METH_VARARGS, NULL};

static int send_all(int fd, const char *p, Py_ssize_t n) {
    while (n > 0) {
        ssize_t k;
        Py_BEGIN_ALLOW_THREADS
        k = send(fd, p, n, 0);
        Py_END_ALLOW_THREADS
        if (k < 0) return -1;
        p += k; n -= k;
    }
    return 0;
}

static char date_buf[64]; static time_t date_at = 0; static int date_len = 0;
static void date_header(void) {
    time_t now = time(NULL);
    if (now != date_at) {
        struct tm tm; gmtime_r(&now, &tm);
        date_len = (int)strftime(date_buf, sizeof date_buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        date_at = now;
    }
}

/* serve(fd, app, base_environ, wsgi_input) -> True (keep the connection) / False (close) */
static PyObject *serve(PyObject *self, PyObject *args) {
    int fd; PyObject *app, *base, *wsgi_input;
    if (!PyArg_ParseTuple(args, "iOO!O", &fd, &app, &PyDict_Type, &base, &wsgi_input)) return NULL;
    char buf[16384];
    ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = recv(fd, buf, sizeof buf, 0);
    Py_END_ALLOW_THREADS
    if (n <= 0) Py_RETURN_FALSE;
    char *end = NULL;
    for (ssize_t i = 0; i + 3 < n; i++)
        if (buf[i] == '\r' && buf[i+1] == '\n' && buf[i+2] == '\r' && buf[i+3] == '\n') { end = buf + i; break; }
    if (!end) { PyErr_SetString(PyExc_ValueError, "incomplete head"); return NULL; }
    /* request line */
    char *p = buf, *sp1 = memchr(p, ' ', end - p);
    if (!sp1 || sp1 == p) goto bad;
    for (char *q = p; q < sp1; q++) if (!is_tchar((unsigned char)*q)) goto bad;
    char *target = sp1 + 1, *sp2 = memchr(target, ' ', end - target);
    if (!sp2 || sp2 == target) goto bad;
    for (char *q = target; q < sp2; q++) if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f) goto bad;
    char *ver = sp2 + 1, *eol = memchr(ver, '\r', end + 2 - ver);
    if (!eol || eol - ver != 8 || memcmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '1' && ver[7] != '0') || eol[1] != '\n') goto bad;
    int http11 = ver[7] == '1';
    PyObject *environ = PyDict_Copy(base);
    if (!environ) return NULL;
    PyObject *v;
    v = PyUnicode_DecodeLatin1(p, sp1 - p, NULL); PyDict_SetItem(environ, str_REQUEST_METHOD, v); Py_DECREF(v);
    v = PyUnicode_DecodeLatin1(target, sp2 - target, NULL); PyDict_SetItem(environ, str_RAW_URI, v); Py_DECREF(v);
    char *qm = memchr(target, '?', sp2 - target);
    char *path_end = qm ? qm : sp2;
    v = PyUnicode_DecodeLatin1(target, path_end - target, NULL); PyDict_SetItem(environ, str_PATH_INFO, v); Py_DECREF(v);
    v = qm ? PyUnicode_DecodeLatin1(qm + 1, sp2 - qm - 1, NULL) : PyUnicode_FromStringAndSize("", 0);
    PyDict_SetItem(environ, str_QUERY_STRING, v); Py_DECREF(v);
    PyDict_SetItem(environ, str_SERVER_PROTOCOL, http11 ? str_http11 : str_http10);
    PyDict_SetItem(environ, str_wsgi_input, wsgi_input);
    int keep = http11;
    /* header fields */
    char *line = eol + 2;
    char key[300];
    while (line < end + 2) {
        char *le = memchr(line, '\r', end + 2 - line);
        if (!le || le[1] != '\n') goto bad_env;
        if (le == line) break;
        char *colon = memchr(line, ':', le - line);
        if (!colon || colon == line || colon - line > 250) goto bad_env;
        memcpy(key, "HTTP_", 5);
        int k = 5;
        for (char *q = line; q < colon; q++) {
            unsigned char c = (unsigned char)*q;
            if (!is_tchar(c)) goto bad_env;
            if (c == '_') { k = -1; break; }  /* dropped, as the default header_map */
            key[k++] = c == '-' ? '_' : (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
        }
        char *vs = colon + 1, *ve = le;
        while (vs < ve && (*vs == ' ' || *vs == '\t')) vs++;
        while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        for (char *q = vs; q < ve; q++) if ((unsigned char)*q < 0x20 && *q != '\t') goto bad_env;
        if (k > 0) {
            PyObject *kk = PyUnicode_DecodeLatin1(key, k, NULL);
            PyObject *vv = PyUnicode_DecodeLatin1(vs, ve - vs, NULL);
            if (k == 15 && memcmp(key, "HTTP_CONNECTION", 15) == 0 && ve - vs == 5 && strncasecmp(vs, "close", 5) == 0) keep = 0;
            PyObject *old = PyDict_GetItem(environ, kk);
            if (old) { PyObject *j = PyUnicode_FromFormat("%U, %U", old, vv); PyDict_SetItem(environ, kk, j); Py_DECREF(j); }
            else PyDict_SetItem(environ, kk, vv);
            Py_DECREF(kk); Py_DECREF(vv);
        }
        line = le + 2;
    }
    /* the app */
    PyObject *holder = PyList_New(0);
    PyObject *sr = PyCFunction_New(&start_response_def, holder);
    PyObject *result = PyObject_CallFunctionObjArgs(app, environ, sr, NULL);
    Py_DECREF(sr); Py_DECREF(environ);
    if (!result) { Py_DECREF(holder); return NULL; }
    PyObject *body = NULL;
    if (PyList_CheckExact(result) && PyList_GET_SIZE(result) == 1 && PyBytes_CheckExact(PyList_GET_ITEM(result, 0))) {
        body = PyList_GET_ITEM(result, 0); Py_INCREF(body);
    } else {
        PyObject *empty = PyBytes_FromStringAndSize("", 0);
        PyObject *seq = PySequence_Fast(result, "iterable");
        body = seq ? _PyBytes_Join(empty, seq) : NULL;
        Py_XDECREF(seq);
        Py_DECREF(empty);
    }
    PyObject *closer = PyObject_GetAttrString(result, "close");
    if (closer) { PyObject *r = PyObject_CallNoArgs(closer); Py_XDECREF(r); Py_DECREF(closer); } else PyErr_Clear();
    Py_DECREF(result);
    if (!body || PyList_GET_SIZE(holder) != 2) { Py_XDECREF(body); Py_DECREF(holder); return NULL; }
    /* the head */
    PyObject *status = PyList_GET_ITEM(holder, 0), *headers = PyList_GET_ITEM(holder, 1);
    char head[8192]; Py_ssize_t hl = 0;
    Py_ssize_t sl; const char *s = PyUnicode_AsUTF8AndSize(status, &sl);
    if (!s || sl < 3 || sl > 200) goto bad_resp;
    hl += sprintf(head, "%s %s\r\n", http11 ? "HTTP/1.1" : "HTTP/1.0", s);
    Py_ssize_t nh = PyList_Size(headers);
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        Py_ssize_t nl, vl;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &nl);
        const char *val = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vl);
        if (!name || !val || hl + nl + vl + 4 > (Py_ssize_t)sizeof head - 200) goto bad_resp;
        for (Py_ssize_t j = 0; j < nl; j++) if (!is_tchar((unsigned char)name[j])) goto bad_resp;
        for (Py_ssize_t j = 0; j < vl; j++) if (val[j] == '\r' || val[j] == '\n' || val[j] == 0) goto bad_resp;
        if (nl == 14 && strncasecmp(name, "content-length", 14) == 0) continue;
        if (nl == 10 && strncasecmp(name, "connection", 10) == 0) continue;
        memcpy(head + hl, name, nl); hl += nl; head[hl++] = ':'; head[hl++] = ' ';
        memcpy(head + hl, val, vl); hl += vl; head[hl++] = '\r'; head[hl++] = '\n';
    }
    date_header();
    memcpy(head + hl, date_buf, date_len); hl += date_len;
    hl += sprintf(head + hl, "Server: django-prefork\r\nContent-Length: %zd\r\n%s\r\n",
                  PyBytes_GET_SIZE(body), keep ? "" : "Connection: close\r\n");
    Py_DECREF(holder);
    /* head and body in one send when small */
    int rc;
    if (PyBytes_GET_SIZE(body) <= 65536) {
        char *out = PyMem_Malloc(hl + PyBytes_GET_SIZE(body));
        memcpy(out, head, hl); memcpy(out + hl, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body));
        rc = send_all(fd, out, hl + PyBytes_GET_SIZE(body));
        PyMem_Free(out);
    } else {
        rc = send_all(fd, head, hl);
        if (rc == 0) rc = send_all(fd, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body));
    }
    Py_DECREF(body);
    if (rc < 0) Py_RETURN_FALSE;
    if (keep) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
bad_resp:
    Py_DECREF(holder); Py_XDECREF(body);
    PyErr_SetString(PyExc_ValueError, "bad response"); return NULL;
bad_env:
    Py_DECREF(environ);
bad:
    PyErr_SetString(PyExc_ValueError, "bad request"); return NULL;
}

static PyMethodDef methods[] = {{"serve", serve, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "probecore", NULL, -1, methods};
PyMODINIT_FUNC PyInit_probecore(void) {
    str_REQUEST_METHOD = PyUnicode_InternFromString("REQUEST_METHOD");
    str_PATH_INFO = PyUnicode_InternFromString("PATH_INFO");
    str_QUERY_STRING = PyUnicode_InternFromString("QUERY_STRING");
    str_SERVER_PROTOCOL = PyUnicode_InternFromString("SERVER_PROTOCOL");
    str_RAW_URI = PyUnicode_InternFromString("RAW_URI");
    str_wsgi_input = PyUnicode_InternFromString("wsgi.input");
    str_http11 = PyUnicode_InternFromString("HTTP/1.1");
    str_http10 = PyUnicode_InternFromString("HTTP/1.0");
    return PyModule_Create(&mod);
}
