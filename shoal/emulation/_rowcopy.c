/* copy_row(dst, src): copy the ndarray ``src`` into the ndarray ``dst`` when both hold the same dtype (the same
 * or an equivalent descriptor), the same shape, and both are C-contiguous (and ``dst`` writeable); raise TypeError or
 * ValueError otherwise, so that the caller converts ``src`` with numpy instead. ``dst`` is one of shoal's own
 * contiguous buffer rows. This is what a memoryview assignment does for a fresh observation array, without
 * exporting a buffer (numpy builds a format string for every new array it exports). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <string.h>

static PyObject *copy_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "copy_row(dst, src) takes two arrays");
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
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"copy_row", (PyCFunction)(void (*)(void))copy_row, METH_FASTCALL,
     "copy_row(dst, src): copy src into dst if they match exactly, else raise TypeError or ValueError."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowcopy", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rowcopy(void) {
    import_array();
    return PyModule_Create(&module);
}
