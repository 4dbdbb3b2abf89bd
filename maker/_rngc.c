/* The draws of maker._rng in C: the same SplitMix64 values, bit for bit, at a tenth of the cost.
 *
 * A simulated run draws about a dozen of them per step, and in Python's arbitrary-precision integers each
 * costs a fifth of a microsecond, which is most of what a simulated agent costs the engine. maker/_rng.py
 * holds the definitions and the Python versions, used where this module is not built; tests/test_rng.py
 * checks that the two agree.
 *
 * Integers are read modulo 2**64 (PyLong_AsUnsignedLongLongMask), which is what the Python versions'
 * masking does with every value they are given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static inline uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static int read_u64(PyObject *obj, uint64_t *out) {
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected an int, got %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static PyObject *rng_mix64(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t x;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "mix64(x) takes one argument");
        return NULL;
    }
    if (read_u64(args[0], &x) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(mix(x));
}

static PyObject *rng_mixes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t base;
    Py_ssize_t lo, hi;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "mixes(base, lo, hi) takes three arguments");
        return NULL;
    }
    if (read_u64(args[0], &base) < 0) {
        return NULL;
    }
    lo = PyLong_AsSsize_t(args[1]);
    if (lo == -1 && PyErr_Occurred()) {
        return NULL;
    }
    hi = PyLong_AsSsize_t(args[2]);
    if (hi == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n = hi > lo ? hi - lo : 0;
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(mix(base + (uint64_t)(lo + i)));
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

static PyObject *rng_uniform(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t seed, slot;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "uniform(seed, slot) takes two arguments");
        return NULL;
    }
    if (read_u64(args[0], &seed) < 0 || read_u64(args[1], &slot) < 0) {
        return NULL;
    }
    /* uint64 -> double rounds to nearest, ties to even, as Python's int -> float does; the scale is 2**-64,
     * exact. */
    return PyFloat_FromDouble((double)mix(seed ^ (slot * 0xD1B54A32D192ED03ULL)) * 0x1p-64);
}

static PyMethodDef methods[] = {
    {"mix64", (PyCFunction)(void (*)(void))rng_mix64, METH_FASTCALL, "SplitMix64 finaliser of x (mod 2**64)."},
    {"mixes", (PyCFunction)(void (*)(void))rng_mixes, METH_FASTCALL,
     "[mix64(base + i) for i in range(lo, hi)]."},
    {"uniform", (PyCFunction)(void (*)(void))rng_uniform, METH_FASTCALL,
     "A float in [0, 1) for draw number slot of seed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "maker._rngc", "SplitMix64 draws of maker._rng, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__rngc(void) { return PyModule_Create(&module); }
