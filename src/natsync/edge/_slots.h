/* What natsync's C modules that read and write Python objects' slots directly share: a slot at
 * its offset (found from the class's member descriptor: a __slots__ name, a slots dataclass'
 * field), and putting a value in one. The callers check each object's exact type first: an
 * offset holds for the class it was found on. */
#ifndef NATSYNC_SLOTS_H
#define NATSYNC_SLOTS_H

#include <Python.h>
#include <structmember.h>

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* Put *value* (a new reference, or NULL for an allocation that failed: then -1) in a slot. */
static inline int put_slot(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    if (value == NULL) return -1;
    PyObject *old = SLOT(obj, offset);
    SLOT(obj, offset) = value;
    Py_XDECREF(old);
    return 0;
}

/* The offset of *type*'s slot *name* (a writable object slot): 0, or -1 with TypeError. */
static inline int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset) {
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a plain slot", type->tp_name, name);
        return -1;
    }
    *offset = member->offset;
    return 0;
}

/* The offsets of the n names of *type*'s __slots__, in their order (a slots dataclass: its
 * fields, as its __init__ takes them): 0, or -1 with an exception. */
static inline int field_offsets(PyTypeObject *type, Py_ssize_t *offsets, Py_ssize_t n) {
    PyObject *names = PyObject_GetAttrString((PyObject *)type, "__slots__");
    if (names == NULL) return -1;
    int failed = !PyTuple_Check(names) || PyTuple_GET_SIZE(names) != n;
    if (failed) PyErr_Format(PyExc_TypeError, "%s must have %zd slots", type->tp_name, n);
    for (Py_ssize_t i = 0; !failed && i < n; i++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(names, i));
        failed = name == NULL || slot_offset(type, name, &offsets[i]) < 0;
    }
    Py_DECREF(names);
    return failed ? -1 : 0;
}

#endif
