/* copy_row(dst, src): copy the ndarray ``src`` into the ndarray ``dst`` when both hold the same dtype (the same
 * or an equivalent descriptor), the same shape, and both are C-contiguous (and ``dst`` writeable); raise TypeError or
 * ValueError otherwise, so that the caller converts ``src`` with numpy instead. ``dst`` is one of shoal's own
 * contiguous buffer rows. This is what a memoryview assignment does for a fresh observation array, without
 * exporting a buffer (numpy builds a format string for every new array it exports).
 *
 * copy_row_checked(dst, src, reward): the same copy, then raise NonFiniteValue("reward", -1) if ``reward`` is a NaN or
 * an infinity, or NonFiniteValue("observation", i) if element ``i`` of ``dst`` is (float16/32/64 rows; other dtypes
 * hold none). The check costs a few nanoseconds inside the call that copies anyway; a separate call from Python would
 * cost more than the whole copy. copy_row takes the same third argument and ignores it, so callers hold one of the
 * two functions and call it the same way.
 *
 * first_nonfinite(array): the index (in C order) of the first NaN or infinity of a C-contiguous, aligned float16/32/64
 * array, or -1 (also for integer and bool arrays); TypeError for anything else (the caller asks numpy then). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static PyObject *NonFiniteValue = NULL;

/* An element is a NaN or an infinity exactly when all its exponent bits are set: integer tests that the compiler can
 * vectorise, then a second pass to find the first one only when there is one. */
#define SCAN(NAME, TYPE, MASK)                                               \
    static Py_ssize_t NAME(const TYPE *p, Py_ssize_t n) {                    \
        TYPE any = 0;                                                        \
        for (Py_ssize_t i = 0; i < n; i++) any |= (TYPE)((p[i] & MASK) == MASK); \
        if (!any) return -1;                                                 \
        for (Py_ssize_t i = 0; i < n; i++)                                   \
            if ((p[i] & MASK) == MASK) return i;                             \
        return -1;                                                           \
    }
SCAN(scan16, uint16_t, (uint16_t)0x7c00u)
SCAN(scan32, uint32_t, (uint32_t)0x7f800000u)
SCAN(scan64, uint64_t, (uint64_t)0x7ff0000000000000ull)

static PyObject *raise_nonfinite(const char *field, Py_ssize_t index) {
    PyObject *args = Py_BuildValue("(sn)", field, index);
    if (args != NULL) {
        PyErr_SetObject(NonFiniteValue, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* First non-finite element of a C-contiguous aligned array: its index, -1 if none, -2 if the dtype is not handled. */
static Py_ssize_t scan(PyArrayObject *a) {
    int type = PyArray_TYPE(a);
    if (!PyArray_ISNOTSWAPPED(a) && !(PyTypeNum_ISINTEGER(type) || PyTypeNum_ISBOOL(type))) {
        return -2;  /* byte-swapped floats: the bit patterns below are native-order; numpy checks these */
    }
    Py_ssize_t n = PyArray_SIZE(a);
    const void *data = PyArray_DATA(a);
    switch (type) {
        case NPY_HALF: return scan16((const uint16_t *)data, n);
        case NPY_FLOAT: return sizeof(float) == 4 ? scan32((const uint32_t *)data, n) : -2;
        case NPY_DOUBLE: return sizeof(double) == 8 ? scan64((const uint64_t *)data, n) : -2;
        default: return PyTypeNum_ISINTEGER(type) || PyTypeNum_ISBOOL(type) ? -1 : -2;
    }
}

static PyObject *copy_impl(PyObject *const *args, Py_ssize_t nargs, int check) {
    if (nargs != 2 + check && !(nargs == 3 && !check)) {
        PyErr_SetString(PyExc_TypeError, check ? "copy_row_checked(dst, src, reward) takes two arrays and a number"
                                               : "copy_row(dst, src[, reward]) takes two arrays");
        return NULL;
    }
    if (!PyArray_CheckExact(args[0]) || !PyArray_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "copy_row: dst and src must be numpy arrays");
        return NULL;
    }
    PyArrayObject *dst = (PyArrayObject *)args[0];
    PyArrayObject *src = (PyArrayObject *)args[1];
    PyArray_Descr *have = PyArray_DESCR(src), *want = PyArray_DESCR(dst);
    if (PyDataType_REFCHK(have) || PyDataType_REFCHK(want)) {  /* object/StringDType items own references */
        PyErr_SetString(PyExc_TypeError, "copy_row: arrays of objects are not copied bytewise");
        return NULL;
    }
    if ((have != want && !PyArray_EquivTypes(have, want)) || PyArray_NDIM(src) != PyArray_NDIM(dst) ||
        PyArray_NBYTES(src) != PyArray_NBYTES(dst) || !PyArray_IS_C_CONTIGUOUS(src) ||
        !PyArray_IS_C_CONTIGUOUS(dst) || !PyArray_ISWRITEABLE(dst)) {
        PyErr_SetString(PyExc_ValueError, "copy_row: src does not match dst's dtype, size and layout");
        return NULL;
    }
    if (memcmp(PyArray_DIMS(src), PyArray_DIMS(dst), PyArray_NDIM(src) * sizeof(npy_intp))) {
        PyErr_SetString(PyExc_ValueError, "copy_row: src has another shape than dst");
        return NULL;
    }
    memmove(PyArray_DATA(dst), PyArray_DATA(src), (size_t)PyArray_NBYTES(src)); /* src may be a view of dst */
    if (!check) Py_RETURN_NONE;
    PyObject *reward = args[2];
    if (!PyLong_CheckExact(reward)) {  /* ints (and bools) are finite; anything else as a double */
        double value = PyFloat_CheckExact(reward) ? PyFloat_AS_DOUBLE(reward) : PyFloat_AsDouble(reward);
        if (value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear(); /* not a number: the caller has already written (and so checked) it */
        } else if (!isfinite(value)) {
            return raise_nonfinite("reward", -1);
        }
    }
    Py_ssize_t bad = PyArray_ISALIGNED(dst) ? scan(dst) : -2;
    if (bad == -2) {
        PyErr_SetString(PyExc_TypeError, "copy_row_checked: dst's dtype or alignment is not scanned here");
        return NULL;
    }
    if (bad >= 0) return raise_nonfinite("observation", bad);
    Py_RETURN_NONE;
}

static PyObject *copy_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return copy_impl(args, nargs, 0);
}

static PyObject *copy_row_checked(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return copy_impl(args, nargs, 1);
}

static PyObject *first_nonfinite(PyObject *module, PyObject *array) {
    if (!PyArray_Check(array)) {
        PyErr_SetString(PyExc_TypeError, "first_nonfinite: not a numpy array");
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)array;
    Py_ssize_t bad = PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a) ? scan(a) : -2;
    if (bad == -2) {
        PyErr_SetString(PyExc_TypeError, "first_nonfinite: the array's dtype or layout is not scanned here");
        return NULL;
    }
    return PyLong_FromSsize_t(bad);
}

static PyMethodDef methods[] = {
    {"copy_row", (PyCFunction)(void (*)(void))copy_row, METH_FASTCALL,
     "copy_row(dst, src[, reward]): copy src into dst if they match exactly, else raise TypeError or ValueError; "
     "reward is ignored."},
    {"copy_row_checked", (PyCFunction)(void (*)(void))copy_row_checked, METH_FASTCALL,
     "copy_row_checked(dst, src, reward): copy_row, then raise NonFiniteValue(field, index) for a NaN or infinite "
     "reward or element of dst."},
    {"first_nonfinite", (PyCFunction)first_nonfinite, METH_O,
     "first_nonfinite(array): index of the first NaN or infinity of a contiguous float array, or -1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowcopy", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rowcopy(void) {
    import_array();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    NonFiniteValue = PyErr_NewExceptionWithDoc(
        "shoal.emulation._rowcopy.NonFiniteValue",
        "A NaN or infinity found by copy_row_checked; args: (field, index) with field 'reward' or 'observation'.",
        PyExc_ArithmeticError, NULL);
    if (NonFiniteValue == NULL || PyModule_AddObjectRef(m, "NonFiniteValue", NonFiniteValue) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
