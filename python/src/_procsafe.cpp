// procsafe._procsafe: the CPython extension over procsafe's headers (raw C API).
// SPDX-License-Identifier: MIT
//
// One Python type per C++ type (kind x value type), so a hot method is one
// cast and one call: increment() is METH_NOARGS, add(n) METH_O, each a
// pointer to the object in the mapping, one atomic instruction and the int
// it returns. Every wait (counter waits, latch, barrier, a lock) releases the
// GIL and sleeps in slices of at most 50 ms, then takes the GIL back and
// calls PyErr_CheckSignals: Ctrl-C is a KeyboardInterrupt within a slice.
// A mutex counter's operations try the lock with the GIL held (one
// trylock: the common case) and release the GIL only to wait for it.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <procsafe/procsafe.hpp>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

namespace ps = procsafe;
using steady = std::chrono::steady_clock;
using time_point = steady::time_point;

// ---------------------------------------------------------------- errors

constexpr int errc_count = static_cast<int>(ps::errc::system_error) + 1;
PyObject* g_error = nullptr;
PyObject* g_errors[errc_count] = {};

PyObject* decode(std::string_view s) { return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"); }

void set_attr_str(PyObject* o, const char* attr, std::string_view v, bool none_if_empty) {
    PyObject* s = (none_if_empty && v.empty()) ? Py_NewRef(Py_None) : decode(v);
    if (s == nullptr) {
        PyErr_Clear();
        return;
    }
    if (PyObject_SetAttrString(o, attr, s) < 0) PyErr_Clear();
    Py_DECREF(s);
}

/// Raises the procsafe.Error subclass of e's code; the message is what(),
/// which names the segment and the object.
void set_error(const ps::error& e) {
    const int code = e.code().value();
    PyObject* cls = (code > 0 && code < errc_count && g_errors[code] != nullptr) ? g_errors[code] : g_error;
    PyObject* msg = decode(e.what());
    if (msg == nullptr) return;
    PyObject* exc = PyObject_CallOneArg(cls, msg);
    Py_DECREF(msg);
    if (exc == nullptr) return;
    set_attr_str(exc, "segment", e.segment_name(), true);
    set_attr_str(exc, "object", e.object_name(), true);
    set_attr_str(exc, "detail", e.detail(), false);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
    Py_DECREF(exc);
}

void set_error(ps::errc code, std::string_view segment, std::string_view object, std::string_view detail) {
    set_error(ps::error(code, segment, object, detail));
}

void set_current_exception() {
    try {
        throw;
    } catch (const ps::error& e) {
        set_error(e);
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
}

/// f() with C++ exceptions turned into Python ones.
template <class F>
PyObject* guarded(F&& f) noexcept {
    try {
        return f();
    } catch (...) {
        set_current_exception();
        return nullptr;
    }
}

// ----------------------------------------------------------- value types

enum vt : int { i8, i16, i32, i64, u8, u16, u32, u64, f32, f64, vt_count };
const char* const vt_names[vt_count] = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"};

template <class T>
constexpr vt vt_of() {
    if constexpr (std::is_same_v<T, std::int8_t>) return i8;
    else if constexpr (std::is_same_v<T, std::int16_t>) return i16;
    else if constexpr (std::is_same_v<T, std::int32_t>) return i32;
    else if constexpr (std::is_same_v<T, std::int64_t>) return i64;
    else if constexpr (std::is_same_v<T, std::uint8_t>) return u8;
    else if constexpr (std::is_same_v<T, std::uint16_t>) return u16;
    else if constexpr (std::is_same_v<T, std::uint32_t>) return u32;
    else if constexpr (std::is_same_v<T, std::uint64_t>) return u64;
    else if constexpr (std::is_same_v<T, float>) return f32;
    else return f64;
}

template <class F>
PyObject* dispatch(int t, F&& f) {
    switch (t) {
        case i8: return f.template operator()<std::int8_t>();
        case i16: return f.template operator()<std::int16_t>();
        case i32: return f.template operator()<std::int32_t>();
        case i64: return f.template operator()<std::int64_t>();
        case u8: return f.template operator()<std::uint8_t>();
        case u16: return f.template operator()<std::uint16_t>();
        case u32: return f.template operator()<std::uint32_t>();
        case u64: return f.template operator()<std::uint64_t>();
        case f32: return f.template operator()<float>();
        default: return f.template operator()<double>();
    }
}

/// The value type named by `o`: a name ("int64", "uint8", "float64",
/// "double"...) or the Python type int (int64) or float (float64).
bool parse_vt(PyObject* o, int& out, bool integers_only) {
    if (o == nullptr || o == Py_None) {
        out = i64;
        return true;
    }
    int t = -1;
    if (o == reinterpret_cast<PyObject*>(&PyLong_Type)) t = i64;
    else if (o == reinterpret_cast<PyObject*>(&PyFloat_Type)) t = f64;
    else if (PyUnicode_Check(o)) {
        const char* s = PyUnicode_AsUTF8(o);
        if (s == nullptr) return false;
        const std::string_view name(s);
        for (int i = 0; i < vt_count; ++i)
            if (name == vt_names[i]) t = i;
        if (name == "double") t = f64;
    }
    if (t < 0 || (integers_only && t >= f32)) {
        PyObject* r = PyObject_Repr(o);
        const char* rs = r ? PyUnicode_AsUTF8(r) : "?";
        std::string detail = std::string("value type ") + (rs ? rs : "?") +
                             (integers_only ? ": this kind holds an integer type (int8 to int64, uint8 to uint64)"
                                            : ": one of int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, "
                                              "float64 (or int, float)");
        Py_XDECREF(r);
        PyErr_Clear();
        set_error(ps::errc::invalid_argument, {}, {}, detail);
        return false;
    }
    out = t;
    return true;
}

/// o as a T, refusing what does not fit (OverflowError) or is not a number
/// of that kind (TypeError: a float for an integer type).
template <class T>
bool from_py(PyObject* o, T& out) {
    if constexpr (std::is_floating_point_v<T>) {
        const double d = PyFloat_AsDouble(o);
        if (d == -1.0 && PyErr_Occurred()) return false;
        out = static_cast<T>(d);
        return true;
    } else if constexpr (std::is_signed_v<T>) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred()) return false;
        if (overflow != 0 || v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
            PyErr_Format(PyExc_OverflowError, "%R is out of range for %s", o, vt_names[vt_of<T>()]);
            return false;
        }
        out = static_cast<T>(v);
        return true;
    } else {
        PyObject* n = PyNumber_Index(o);
        if (n == nullptr) return false;
        const unsigned long long v = PyLong_AsUnsignedLongLong(n);
        Py_DECREF(n);
        if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "%R is out of range for %s", o, vt_names[vt_of<T>()]);
            return false;
        }
        if (v > std::numeric_limits<T>::max()) {
            PyErr_Format(PyExc_OverflowError, "%R is out of range for %s", o, vt_names[vt_of<T>()]);
            return false;
        }
        out = static_cast<T>(v);
        return true;
    }
}

/// o as a T the way ctypes stores it (multiprocessing.Value): an integer
/// is taken modulo 2^bits, silently; a float for an integer type is a TypeError.
template <class T>
bool from_py_wrapping(PyObject* o, T& out) {
    if constexpr (std::is_floating_point_v<T>) {
        return from_py(o, out);
    } else {
#if PY_VERSION_HEX < 0x030C0000 && !defined(Py_LIMITED_API)
        // A small int (one 30-bit digit, as add(1) passes): read in place.
        // PyLong_AsLongLongAndOverflow took a third of add(1)'s time. The
        // layout is CPython 3.11's (3.12 changed it): older and newer
        // versions take the general path below.
        if (PyLong_CheckExact(o)) {
            const Py_ssize_t size = Py_SIZE(o);
            if (size >= -1 && size <= 1) {
                const auto d = static_cast<unsigned long long>(size == 0 ? 0 : reinterpret_cast<PyLongObject*>(o)->ob_digit[0]);
                out = static_cast<T>(size < 0 ? 0 - d : d);
                return true;
            }
        }
#endif
        if (PyLong_CheckExact(o)) {
            int overflow = 0;
            const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow == 0) {
                out = static_cast<T>(static_cast<unsigned long long>(v));
                return true;
            }
        }
        const unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
        if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) return false;
        out = static_cast<T>(v);
        return true;
    }
}

/// A new list of n items, item(i) each (a new reference; nullptr with the
/// error set if one is nullptr).
template <class F>
PyObject* list_of(std::size_t n, F&& item) {
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(n));
    if (list == nullptr) return nullptr;
    for (std::size_t i = 0; i < n; ++i) {
        PyObject* v = item(i);
        if (v == nullptr) {
            Py_DECREF(list);
            return nullptr;
        }
        PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), v);
    }
    return list;
}

template <class T>
PyObject* to_py(T v) {
    if constexpr (std::is_floating_point_v<T>) return PyFloat_FromDouble(static_cast<double>(v));
    else if constexpr (std::is_signed_v<T>) return PyLong_FromLongLong(v);
    else return PyLong_FromUnsignedLongLong(v);
}

// ---------------------------------------------------------- timeouts, waits

constexpr auto slice = std::chrono::milliseconds(50);

/// timeout (seconds; None: no deadline; 0 or less: now) as a deadline.
bool parse_deadline(PyObject* timeout, time_point& out) {
    if (timeout == nullptr || timeout == Py_None) {
        out = time_point::max();
        return true;
    }
    const double s = PyFloat_AsDouble(timeout);
    if (s == -1.0 && PyErr_Occurred()) return false;
    if (std::isnan(s)) {
        set_error(ps::errc::invalid_argument, {}, {}, "a timeout is a number of seconds or None, not NaN");
        return false;
    }
    out = ps::detail::deadline_after(std::chrono::duration<double>(s));
    return true;
}

/// Calls attempt(until) without the GIL, `until` at most one slice away,
/// until it returns true (True), the deadline passes (False) or a signal
/// handler raises (NULL). attempt may throw (rethrown with the GIL held).
template <class Attempt>
PyObject* sliced_wait(time_point deadline, Attempt&& attempt) {
    for (;;) {
        const time_point now = steady::now();
        const time_point until = deadline <= now ? now : (deadline - now > slice ? now + slice : deadline);
        bool done = false;
        std::exception_ptr failure;
        Py_BEGIN_ALLOW_THREADS
        try {
            done = attempt(until);
        } catch (...) {
            failure = std::current_exception();
        }
        Py_END_ALLOW_THREADS
        if (failure) std::rethrow_exception(failure);
        if (done) Py_RETURN_TRUE;
        if (PyErr_CheckSignals() < 0) return nullptr;
        if (steady::now() >= deadline) Py_RETURN_FALSE;
    }
}

// This process's pid without a system call (glibc's getpid() is one, 100 ns
// here, and a Lock's acquire and release each asked for it): read when the
// module is loaded, and again in the child of every fork (pthread_atfork;
// Python's os.fork and multiprocessing's fork run the handlers).
long g_pid = 0;
inline long self_pid() noexcept { return g_pid; }

// Which thread of this process holds a lock across Python code (a `with`
// block, a Lock): waiting for it from that thread would never end. Read and
// written with the GIL held; a few entries (one per lock held at once), so a
// vector searched from its end, which allocates only when it grows. Emptied
// in a fork's child: its parent's holders are not its own.
class holder_table {
public:
    bool empty() const noexcept { return entries_.empty(); }
    const unsigned long* find(const void* mutex_owner) const noexcept {
        for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
            if (it->first == mutex_owner) return &it->second;
        return nullptr;
    }
    void set(const void* mutex_owner, unsigned long thread) {
        for (auto& e : entries_)
            if (e.first == mutex_owner) {
                e.second = thread;
                return;
            }
        entries_.emplace_back(mutex_owner, thread);
    }
    void erase(const void* mutex_owner) noexcept {
        for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
            if (it->first == mutex_owner) {
                entries_.erase(std::next(it).base());
                return;
            }
    }
    void clear() noexcept { entries_.clear(); }

private:
    std::vector<std::pair<const void*, unsigned long>> entries_;
};

holder_table& holders() {
    static auto* table = new holder_table();
    return *table;
}

bool refuse_self_deadlock(const void* mutex_owner) {
    auto& h = holders();
    if (h.empty()) return false;
    const unsigned long* holder = h.find(mutex_owner);
    if (holder == nullptr || *holder != PyThread_get_thread_ident()) return false;
    PyErr_SetString(PyExc_RuntimeError,
                    "procsafe: this thread holds this counter's lock (a locked() block or a Lock): waiting for it "
                    "would never end");
    return true;
}

enum class lock_status { acquired, timed_out, failed };

/// Takes c's lock into `held`: a trylock with the GIL held, then (block)
/// sliced waits without it.
template <class C>
lock_status take_lock(C& c, std::optional<typename C::held_lock>& held, bool block, time_point deadline) {
    if (auto h = c.try_lock_until(time_point::min())) {
        held.emplace(std::move(*h));
        return lock_status::acquired;
    }
    if (!block) return lock_status::timed_out;
    if (refuse_self_deadlock(&c)) return lock_status::failed;
    PyObject* r = sliced_wait(deadline, [&](time_point until) {
        auto h = c.try_lock_until(until);
        if (!h) return false;
        held.emplace(std::move(*h));
        return true;
    });
    if (r == nullptr) {
        held.reset();  // a signal came after the lock was taken: let it go
        return lock_status::failed;
    }
    Py_DECREF(r);
    return held ? lock_status::acquired : lock_status::timed_out;
}

// ---------------------------------------------------------------- objects

enum kind : int {
    k_atomic,
    k_mutex,
    k_sharded,
    k_atomic_array,
    k_mutex_array,
    k_histogram,
    k_live_gauge,
    k_latch,
    k_barrier,
    k_value,
    k_lock,
    k_noop,
};
const char* const kind_names[] = {"atomic_counter", "mutex_counter", "sharded_counter", "atomic_counter_array",
                                  "mutex_counter_array", "histogram", "live_gauge", "latch", "barrier",
                                  "value", "lock", "noop"};

struct SegmentObj {
    PyObject_HEAD
    ps::segment* seg;
    long creator;  // the pid that made this object (a forked child never removes)
    bool closed;
    PyObject* weakrefs;
};

/// A procsafe object seen from Python: where it is, and what keeps its
/// mapping alive (the Segment, or for an array element the array).
struct Handle {
    PyObject_HEAD
    void* ptr;
    PyObject* owner;
    PyObject* name;
    Py_ssize_t index;  // an array element's index; -1 otherwise
    int kind;
    int type;  // vt, or -1
    ps::export_switch flag;  // looked up at the first exported() / set_exported()
};

PyTypeObject* g_segment_type = nullptr;

void handle_dealloc(PyObject* self) {
    auto* h = reinterpret_cast<Handle*>(self);
    PyTypeObject* tp = Py_TYPE(self);
    Py_CLEAR(h->owner);
    Py_CLEAR(h->name);
    tp->tp_free(self);
    Py_DECREF(tp);
}

Handle* new_handle(PyTypeObject* tp, void* ptr, PyObject* owner, PyObject* name, int k, int t, Py_ssize_t index = -1) {
    auto* h = reinterpret_cast<Handle*>(tp->tp_alloc(tp, 0));
    if (h == nullptr) return nullptr;
    h->ptr = ptr;
    h->owner = Py_NewRef(owner);
    h->name = Py_NewRef(name);
    h->index = index;
    h->kind = k;
    h->type = t;
    new (&h->flag) ps::export_switch();
    return h;
}

template <class C>
C& obj(PyObject* self) {
    return *static_cast<C*>(reinterpret_cast<Handle*>(self)->ptr);
}

SegmentObj* segment_of(Handle* h) {
    PyObject* o = h->owner;
    while (o != nullptr && Py_TYPE(o) != g_segment_type) o = reinterpret_cast<Handle*>(o)->owner;
    return reinterpret_cast<SegmentObj*>(o);
}

std::string segment_name(SegmentObj* s) { return s->seg->name().empty() ? std::string("(anonymous)") : s->seg->name(); }

PyObject* procsafe_attr(const char* name) {
    PyObject* mod = PyImport_ImportModule("procsafe");
    if (mod == nullptr) return nullptr;
    PyObject* f = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return f;
}

/// Pickles as a reference: procsafe._attach(segment, kind, name, type) finds
/// the object again in the receiving process (which maps the segment once).
PyObject* handle_reduce(PyObject* self, PyObject*) {
    auto* h = reinterpret_cast<Handle*>(self);
    if (h->index >= 0) {  // an array element: the array, and the index
        PyObject* f = procsafe_attr("_attach_element");
        if (f == nullptr) return nullptr;
        return Py_BuildValue("N(On)", f, h->owner, h->index);
    }
    SegmentObj* s = segment_of(h);
    if (s->seg->name().empty()) {
        PyErr_Format(PyExc_TypeError,
                     "procsafe: the %s '%U' lives in an anonymous segment, which only fork()ed children inherit: it "
                     "cannot be pickled (sent to a spawned process or a pool); make it in a named segment",
                     kind_names[h->kind], h->name);
        return nullptr;
    }
    PyObject* f = procsafe_attr("_attach");
    if (f == nullptr) return nullptr;
    return Py_BuildValue("N(ssOs)", f, s->seg->name().c_str(), kind_names[h->kind], h->name,
                         h->type >= 0 ? vt_names[h->type] : "");
}

PyObject* handle_repr(PyObject* self) {
    auto* h = reinterpret_cast<Handle*>(self);
    SegmentObj* s = segment_of(h);
    const std::string seg = s ? segment_name(s) : std::string("?");
    const char* t = h->type >= 0 ? vt_names[h->type] : "";
    if (h->index >= 0)
        return PyUnicode_FromFormat("<procsafe %s[%s] %R[%zd] in segment '%s'>", kind_names[h->kind], t, h->name, h->index,
                                    seg.c_str());
    if (h->type >= 0)
        return PyUnicode_FromFormat("<procsafe %s[%s] %R in segment '%s'>", kind_names[h->kind], t, h->name, seg.c_str());
    return PyUnicode_FromFormat("<procsafe %s %R in segment '%s'>", kind_names[h->kind], h->name, seg.c_str());
}

PyObject* handle_get_name(PyObject* self, void*) { return Py_NewRef(reinterpret_cast<Handle*>(self)->name); }
PyObject* handle_get_segment(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<PyObject*>(segment_of(reinterpret_cast<Handle*>(self))));
}
PyObject* handle_get_type(PyObject* self, void*) {
    const int t = reinterpret_cast<Handle*>(self)->type;
    if (t < 0) Py_RETURN_NONE;
    return PyUnicode_FromString(vt_names[t]);
}

/// The object's export switch, looked up once (the directory lock), then lock-free.
ps::export_switch* handle_switch(PyObject* self) {
    auto* h = reinterpret_cast<Handle*>(self);
    if (h->index >= 0) {
        PyErr_SetString(PyExc_TypeError, "procsafe: an array element is exported with its array: use the array's");
        return nullptr;
    }
    if (!h->flag) {
        SegmentObj* s = segment_of(h);
        Py_ssize_t len;
        const char* n = PyUnicode_AsUTF8AndSize(h->name, &len);
        if (n == nullptr) return nullptr;
        PyObject* r = guarded([&] {
            h->flag = s->seg->export_switch_of(std::string_view(n, len));
            Py_RETURN_NONE;
        });
        if (r == nullptr) return nullptr;
        Py_DECREF(r);
    }
    return &h->flag;
}
PyObject* handle_exported(PyObject* self, PyObject*) {
    ps::export_switch* f = handle_switch(self);
    if (f == nullptr) return nullptr;
    return PyBool_FromLong(f->exported());
}
PyObject* handle_set_exported(PyObject* self, PyObject* arg) {
    const int want = PyObject_IsTrue(arg);
    if (want < 0) return nullptr;
    ps::export_switch* f = handle_switch(self);
    if (f == nullptr) return nullptr;
    return PyBool_FromLong(f->set(want != 0));
}

PyGetSetDef handle_getset[] = {
    {"name", handle_get_name, nullptr, "The object's name in its segment.", nullptr},
    {"segment", handle_get_segment, nullptr, "The Segment the object lives in.", nullptr},
    {"type", handle_get_type, nullptr, "The value type's name (\"int64\", \"float64\"...), or None.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// ---------------------------------------------------------------- types

std::deque<std::string>& type_names() {
    static auto* names = new std::deque<std::string>();
    return *names;
}

/// A heap type: the Handle layout, the generic slots, `methods` and
/// `getset` of its own. Not instantiable from Python unless `new_fn`.
PyTypeObject* make_type(const std::string& name, PyObject* base, PyMethodDef* methods, PyGetSetDef* getset,
                        const char* doc, std::vector<PyType_Slot> extra = {}, int basicsize = sizeof(Handle),
                        bool instantiable = false) {
    type_names().push_back(name);
    std::vector<PyType_Slot> slots = {
        {Py_tp_dealloc, reinterpret_cast<void*>(handle_dealloc)},
        {Py_tp_repr, reinterpret_cast<void*>(handle_repr)},
        {Py_tp_doc, const_cast<char*>(doc)},
    };
    if (methods != nullptr) slots.push_back({Py_tp_methods, methods});
    if (getset != nullptr) slots.push_back({Py_tp_getset, getset});
    for (const auto& s : extra) slots.push_back(s);
    slots.push_back({0, nullptr});
    PyType_Spec spec{type_names().back().c_str(), basicsize, 0,
                     static_cast<unsigned>(Py_TPFLAGS_DEFAULT | (instantiable ? 0 : Py_TPFLAGS_DISALLOW_INSTANTIATION) |
                                           (base == nullptr ? Py_TPFLAGS_BASETYPE : 0) | Py_TPFLAGS_IMMUTABLETYPE),
                     slots.data()};
    return reinterpret_cast<PyTypeObject*>(PyType_FromSpecWithBases(&spec, base));
}

#define PS_DOC(sig, text) sig "\n--\n\n" text

// ------------------------------------------------ atomic and mutex counters

template <class C>
using value_of = typename C::value_type;

template <class C>
constexpr bool is_mutex_v = std::is_same_v<typename C::sync_type, ps::mutex_sync>;

/// Runs f(held_lock&) under c's lock, waiting without the GIL if it is taken.
template <class C, class F>
PyObject* under_lock(C& c, F&& f) {
    return guarded([&]() -> PyObject* {
        std::optional<typename C::held_lock> held;
        if (take_lock(c, held, true, time_point::max()) != lock_status::acquired) return nullptr;
        return f(*held);
    });
}

/// increment() and decrement(): one up or down; the new value.
template <class C, bool Up>
PyObject* c_step(PyObject* self, PyObject*) {
    C& c = obj<C>(self);
    using T = value_of<C>;
    if constexpr (is_mutex_v<C>) {
        return under_lock(c, [](auto& h) {
            T& v = h.value();
            v = Up ? ps::detail::wrapping_add(v, T{1}) : ps::detail::wrapping_sub(v, T{1});
            const T r = v;
            h.commit();
            return to_py(r);
        });
    } else if constexpr (Up) {
        return to_py(c.increment());
    } else {
        return to_py(c.decrement());
    }
}

/// add, sub, fetch_add, fetch_sub, exchange: one argument, new or old value.
enum class op { add, sub, fetch_add, fetch_sub, exchange };

template <class C, op Op>
PyObject* c_binary(PyObject* self, PyObject* arg) {
    using T = value_of<C>;
    T n;
    if (!from_py(arg, n)) return nullptr;
    C& c = obj<C>(self);
    if constexpr (is_mutex_v<C>) {
        return under_lock(c, [n](auto& h) {
            T& v = h.value();
            const T old = v;
            if constexpr (Op == op::add || Op == op::fetch_add) v = ps::detail::wrapping_add(v, n);
            else if constexpr (Op == op::sub || Op == op::fetch_sub) v = ps::detail::wrapping_sub(v, n);
            else v = n;
            const T r = (Op == op::add || Op == op::sub) ? v : old;
            h.commit();
            return to_py(r);
        });
    } else {
        if constexpr (Op == op::add) return to_py(c.increment(n));
        else if constexpr (Op == op::sub) return to_py(c.decrement(n));
        else if constexpr (Op == op::fetch_add) return to_py(c.fetch_add(n));
        else if constexpr (Op == op::fetch_sub) return to_py(c.fetch_sub(n));
        else return to_py(c.exchange(n));
    }
}

template <class C>
PyObject* c_value(PyObject* self, PyObject*) {
    C& c = obj<C>(self);
    if constexpr (is_mutex_v<C>) {
        return under_lock(c, [](auto& h) { return to_py(h.value()); });
    } else {
        return to_py(c.value());
    }
}

template <class C>
PyObject* c_store(PyObject* self, PyObject* arg) {
    using T = value_of<C>;
    T n;
    if (!from_py(arg, n)) return nullptr;
    C& c = obj<C>(self);
    if constexpr (is_mutex_v<C>) {
        return under_lock(c, [n](auto& h) {
            h.value() = n;
            h.commit();
            Py_RETURN_NONE;
        });
    } else {
        c.store(n);
        Py_RETURN_NONE;
    }
}

template <class C>
PyObject* c_reset(PyObject* self, PyObject*) {
    PyObject* zero = PyLong_FromLong(0);
    PyObject* r = c_store<C>(self, zero);
    Py_DECREF(zero);
    return r;
}

template <class C>
PyObject* c_compare_exchange(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    using T = value_of<C>;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "compare_exchange(expected, desired) takes 2 arguments (%zd given)", nargs);
        return nullptr;
    }
    T expected, desired;
    if (!from_py(args[0], expected) || !from_py(args[1], desired)) return nullptr;
    C& c = obj<C>(self);
    if constexpr (is_mutex_v<C>) {
        return under_lock(c, [&](auto& h) {
            if (!(h.value() == expected)) Py_RETURN_FALSE;
            h.value() = desired;
            h.commit();
            Py_RETURN_TRUE;
        });
    } else {
        return PyBool_FromLong(c.compare_exchange(expected, desired));
    }
}

/// wait_at_least(n, timeout=None) and wait_equal(v, timeout=None).
template <class C, bool AtLeast>
PyObject* c_wait(PyObject* self, PyObject* args, PyObject* kw) {
    using T = value_of<C>;
    static const char* kwlist[] = {"n", "timeout", nullptr};
    PyObject *n_obj = nullptr, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, AtLeast ? "O|O:wait_at_least" : "O|O:wait_equal", const_cast<char**>(kwlist),
                                     &n_obj, &timeout))
        return nullptr;
    T n;
    time_point deadline;
    if (!from_py(n_obj, n) || !parse_deadline(timeout, deadline)) return nullptr;
    C& c = obj<C>(self);
    if constexpr (is_mutex_v<C>) {
        if (refuse_self_deadlock(&c)) return nullptr;
    }
    return guarded([&] {
        return sliced_wait(deadline, [&](time_point until) {
            if constexpr (AtLeast) return c.wait_at_least_until(n, until);
            else return c.wait_equal_until(n, until);
        });
    });
}

// ----- a mutex counter's locked() block

/// The operations of one held_lock type, for the type-erased Locked object.
struct locked_ops {
    int (*acquire)(void* counter, void* buf, time_point deadline);  // 1 taken, 0 timed out, -1 error
    PyObject* (*get)(void* buf);
    int (*set)(void* buf, PyObject* v);
    void (*commit)(void* buf);
    void (*release)(void* buf);  // unlocks (harmless where not the owner) and destroys
};

struct LockedObj {
    PyObject_HEAD
    PyObject* counter;  // the counter's handle (keeps the mapping)
    void* target;       // the C++ counter
    const locked_ops* ops;
    alignas(16) unsigned char held[32];
    int state;  // 0 not entered, 1 held, 2 done
    unsigned long thread;
    long pid;
};
PyTypeObject* g_locked_type = nullptr;

template <class C>
struct locked_impl {
    using held_t = typename C::held_lock;
    static_assert(sizeof(held_t) <= sizeof(LockedObj::held) && alignof(held_t) <= 16);
    static int acquire(void* counter, void* buf, time_point deadline) {
        std::optional<held_t> h;
        const lock_status s = take_lock(*static_cast<C*>(counter), h, true, deadline);
        if (s != lock_status::acquired) return s == lock_status::failed ? -1 : 0;
        ::new (buf) held_t(std::move(*h));
        return 1;
    }
    static PyObject* get(void* buf) { return to_py(static_cast<held_t*>(buf)->value()); }
    static int set(void* buf, PyObject* v) {
        value_of<C> n;
        if (!from_py(v, n)) return -1;
        static_cast<held_t*>(buf)->value() = n;
        return 0;
    }
    static void commit(void* buf) { static_cast<held_t*>(buf)->commit(); }
    static void release(void* buf) { static_cast<held_t*>(buf)->~held_t(); }
    static constexpr locked_ops ops{acquire, get, set, commit, release};
};

template <class C>
PyObject* c_locked(PyObject* self, PyObject*) {
    auto* l = PyObject_New(LockedObj, g_locked_type);
    if (l == nullptr) return nullptr;
    l->counter = Py_NewRef(self);
    l->target = reinterpret_cast<Handle*>(self)->ptr;
    l->ops = &locked_impl<C>::ops;
    l->state = 0;
    l->thread = 0;
    l->pid = 0;
    return reinterpret_cast<PyObject*>(l);
}

void locked_drop(LockedObj* l) {
    if (l->state != 1) return;
    l->state = 2;
    holders().erase(l->target);
    l->ops->release(l->held);
}

void locked_dealloc(PyObject* self) {
    auto* l = reinterpret_cast<LockedObj*>(self);
    if (l->state == 1 && l->pid == self_pid()) locked_drop(l);  // not committed: rolled back
    Py_CLEAR(l->counter);
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}

PyObject* locked_enter(PyObject* self, PyObject*) {
    auto* l = reinterpret_cast<LockedObj*>(self);
    if (l->state != 0) {
        PyErr_SetString(PyExc_RuntimeError, "procsafe: a locked() block is entered once; call locked() again");
        return nullptr;
    }
    const int r = l->ops->acquire(l->target, l->held, time_point::max());
    if (r <= 0) return nullptr;
    l->state = 1;
    l->thread = PyThread_get_thread_ident();
    l->pid = self_pid();
    holders().set(l->target, l->thread);
    return Py_NewRef(self);
}

bool locked_check(LockedObj* l) {
    if (l->state != 1) {
        PyErr_SetString(PyExc_RuntimeError, "procsafe: the value is only there inside its locked() block");
        return false;
    }
    if (l->pid != self_pid() || l->thread != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "procsafe: a locked() block belongs to the thread (and process) that entered it");
        return false;
    }
    return true;
}

PyObject* locked_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    auto* l = reinterpret_cast<LockedObj*>(self);
    if (l->state != 1) Py_RETURN_FALSE;
    if (l->pid != self_pid()) {  // a forked child leaving its parent's block: not ours
        l->state = 2;
        Py_RETURN_FALSE;
    }
    if (!locked_check(l)) return nullptr;
    const bool ok = nargs == 0 || args[0] == Py_None;
    if (ok) l->ops->commit(l->held);  // an exception rolls the change back
    locked_drop(l);
    Py_RETURN_FALSE;
}

PyObject* locked_commit(PyObject* self, PyObject*) {
    auto* l = reinterpret_cast<LockedObj*>(self);
    if (!locked_check(l)) return nullptr;
    l->ops->commit(l->held);
    Py_RETURN_NONE;
}

PyObject* locked_get_value(PyObject* self, void*) {
    auto* l = reinterpret_cast<LockedObj*>(self);
    if (!locked_check(l)) return nullptr;
    return l->ops->get(l->held);
}

int locked_set_value(PyObject* self, PyObject* v, void*) {
    auto* l = reinterpret_cast<LockedObj*>(self);
    if (v == nullptr) {
        PyErr_SetString(PyExc_AttributeError, "procsafe: the value cannot be deleted");
        return -1;
    }
    if (!locked_check(l)) return -1;
    return l->ops->set(l->held, v);
}

PyMethodDef locked_methods[] = {
    {"__enter__", locked_enter, METH_NOARGS, "Takes the lock (waiting without the GIL; Ctrl-C interrupts)."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(locked_exit)), METH_FASTCALL,
     "Commits .value (unless the block raised: then nothing changes) and unlocks."},
    {"commit", locked_commit, METH_NOARGS, PS_DOC("commit($self, /)", "Publishes .value now; the block goes on.")},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef locked_getset[] = {
    {"value", locked_get_value, locked_set_value,
     "The value under the lock; what is set is published when the block ends without an exception.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

template <class C>
PyObject* c_recoveries(PyObject* self, void*) {
    return PyLong_FromUnsignedLong(obj<C>(self).recoveries());
}

template <class C>
PyCFunction locked_fn() {
    if constexpr (is_mutex_v<C>) return c_locked<C>;
    else return nullptr;
}

template <class C>
PyMethodDef* counter_methods() {
    using T = value_of<C>;
    (void)sizeof(T);
    static PyMethodDef m[] = {
        {"increment", c_step<C, true>, METH_NOARGS, PS_DOC("increment($self, /)", "Adds one; returns the new value.")},
        {"decrement", c_step<C, false>, METH_NOARGS, PS_DOC("decrement($self, /)", "Subtracts one; returns the new value.")},
        {"add", c_binary<C, op::add>, METH_O, PS_DOC("add($self, n, /)", "Adds n; returns the new value (integers wrap).")},
        {"sub", c_binary<C, op::sub>, METH_O, PS_DOC("sub($self, n, /)", "Subtracts n; returns the new value.")},
        {"fetch_add", c_binary<C, op::fetch_add>, METH_O, PS_DOC("fetch_add($self, n, /)", "Adds n; returns the value before.")},
        {"fetch_sub", c_binary<C, op::fetch_sub>, METH_O,
         PS_DOC("fetch_sub($self, n, /)", "Subtracts n; returns the value before.")},
        {"exchange", c_binary<C, op::exchange>, METH_O, PS_DOC("exchange($self, v, /)", "Stores v; returns the value before.")},
        {"compare_exchange", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(c_compare_exchange<C>)), METH_FASTCALL,
         PS_DOC("compare_exchange($self, expected, desired, /)",
                "If the value equals expected, stores desired and returns True; otherwise returns False.")},
        {"value", c_value<C>, METH_NOARGS, PS_DOC("value($self, /)", "The current value.")},
        {"store", c_store<C>, METH_O, PS_DOC("store($self, v, /)", "Stores v.")},
        {"reset", c_reset<C>, METH_NOARGS, PS_DOC("reset($self, /)", "Stores zero.")},
        {"wait_at_least", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(c_wait<C, true>)),
         METH_VARARGS | METH_KEYWORDS,
         PS_DOC("wait_at_least($self, /, n, timeout=None)",
                "Blocks until value() >= n, at most timeout seconds (None: no limit); returns whether it got there.\n"
                "Releases the GIL; Ctrl-C raises KeyboardInterrupt.")},
        {"wait_equal", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(c_wait<C, false>)),
         METH_VARARGS | METH_KEYWORDS,
         PS_DOC("wait_equal($self, /, n, timeout=None)",
                "Blocks until value() == n, at most timeout seconds (None: no limit); returns whether it got there.")},
        {is_mutex_v<C> ? "locked" : nullptr, locked_fn<C>(), METH_NOARGS,
         PS_DOC("locked($self, /)",
                "A context manager holding the counter's robust lock: `with c.locked() as v: v.value += 1`.\n"
                "The change is published when the block ends without an exception; a process killed inside\n"
                "leaves the last published value and stalls nobody.")},
        {nullptr, nullptr, 0, nullptr},
    };
    return m;
}

template <class C>
PyGetSetDef* counter_getset() {
    if constexpr (is_mutex_v<C>) {
        static PyGetSetDef g[] = {
            {"recoveries", c_recoveries<C>, nullptr, "How many times a locker found the lock's owner dead and recovered it.", nullptr},
            {nullptr, nullptr, nullptr, nullptr, nullptr},
        };
        return g;
    } else {
        return nullptr;
    }
}

// ------------------------------------------------------- sharded, live gauge

/// A method without arguments that calls Member and returns its result
/// (None for void, a bool, an int or a float).
template <class C, auto Member>
PyObject* call0(PyObject* self, PyObject*) {
    using R = decltype((obj<C>(self).*Member)());
    if constexpr (std::is_void_v<R>) {
        (obj<C>(self).*Member)();
        Py_RETURN_NONE;
    } else if constexpr (std::is_same_v<R, bool>) {
        return PyBool_FromLong((obj<C>(self).*Member)());
    } else {
        return to_py((obj<C>(self).*Member)());
    }
}

template <class C>
PyObject* sh_increment(PyObject* self, PyObject*) {
    obj<C>(self).increment();
    Py_RETURN_NONE;
}
template <class C>
PyObject* sh_decrement(PyObject* self, PyObject*) {
    obj<C>(self).decrement();
    Py_RETURN_NONE;
}
template <class C, bool Sub>
PyObject* sh_add(PyObject* self, PyObject* arg) {
    value_of<C> n;
    if (!from_py(arg, n)) return nullptr;
    if constexpr (Sub) {
        if constexpr (requires { obj<C>(self).sub(n); }) obj<C>(self).sub(n);
        else obj<C>(self).decrement(n);
    } else {
        obj<C>(self).add(n);
    }
    Py_RETURN_NONE;
}

template <class C>
PyMethodDef* sharded_methods() {
    static PyMethodDef m[] = {
        {"increment", sh_increment<C>, METH_NOARGS, PS_DOC("increment($self, /)", "Adds one to this thread's slot.")},
        {"decrement", sh_decrement<C>, METH_NOARGS, PS_DOC("decrement($self, /)", "Subtracts one.")},
        {"add", sh_add<C, false>, METH_O, PS_DOC("add($self, n, /)", "Adds n to this thread's slot (returns None: the total is sum()).")},
        {"sub", sh_add<C, true>, METH_O, PS_DOC("sub($self, n, /)", "Subtracts n.")},
        {"sum", (call0<C, &C::sum>), METH_NOARGS, PS_DOC("sum($self, /)", "The slots added up: exact once writers stop.")},
        {"value", (call0<C, &C::sum>), METH_NOARGS, PS_DOC("value($self, /)", "The same as sum().")},
        {"reset", (call0<C, &C::reset>), METH_NOARGS, PS_DOC("reset($self, /)", "Zeroes every slot (exact only when no writer runs).")},
        {"slots", (call0<C, &C::slots>), METH_NOARGS, PS_DOC("slots($self, /)", "The number of slots.")},
        {"owned_slots", (call0<C, &C::owned_slots>), METH_NOARGS, PS_DOC("owned_slots($self, /)", "Slots a writer thread owns now.")},
        {nullptr, nullptr, 0, nullptr},
    };
    return m;
}

template <class C>
PyObject* lg_set(PyObject* self, PyObject* arg) {
    value_of<C> n;
    if (!from_py(arg, n)) return nullptr;
    obj<C>(self).set(n);
    Py_RETURN_NONE;
}

template <class C>
PyObject* lg_processes(PyObject* self, PyObject*) {
    return guarded([&]() -> PyObject* {
        const auto ps_ = obj<C>(self).processes();
        return list_of(ps_.size(), [&](std::size_t i) {
            return Py_BuildValue("(kNO)", static_cast<unsigned long>(ps_[i].pid), to_py(ps_[i].value),
                                 ps_[i].alive ? Py_True : Py_False);
        });
    });
}

template <class C>
PyObject* lg_aggregation(PyObject* self, PyObject*) {
    const char* n = ps::aggregation_name(obj<C>(self).aggregation());
    return PyUnicode_FromString(n != nullptr ? n : "?");
}

template <class C>
PyMethodDef* gauge_methods() {
    static PyMethodDef m[] = {
        {"increment", sh_increment<C>, METH_NOARGS, PS_DOC("increment($self, /)", "Adds one to this process's contribution.")},
        {"decrement", sh_decrement<C>, METH_NOARGS, PS_DOC("decrement($self, /)", "Subtracts one from it.")},
        {"add", sh_add<C, false>, METH_O, PS_DOC("add($self, n, /)", "Adds n to this process's contribution.")},
        {"sub", sh_add<C, true>, METH_O, PS_DOC("sub($self, n, /)", "Subtracts n from it.")},
        {"set", lg_set<C>, METH_O, PS_DOC("set($self, v, /)", "Sets this process's contribution to v.")},
        {"contribution", (call0<C, &C::contribution>), METH_NOARGS, PS_DOC("contribution($self, /)", "This process's contribution.")},
        {"value", (call0<C, &C::value>), METH_NOARGS,
         PS_DOC("value($self, /)", "The contributions of the processes that still run, added up.")},
        {"live_processes", (call0<C, &C::live_processes>), METH_NOARGS, PS_DOC("live_processes($self, /)", "Slots of live processes.")},
        {"slots", (call0<C, &C::slots>), METH_NOARGS, PS_DOC("slots($self, /)", "The number of slots.")},
        {"processes", lg_processes<C>, METH_NOARGS,
         PS_DOC("processes($self, /)",
                "[(pid, value, alive)]: the processes holding a slot, live or dead (a dead one's slot not yet taken over).")},
        {"aggregation", lg_aggregation<C>, METH_NOARGS,
         PS_DOC("aggregation($self, /)", "How readers combine the processes' values: \"livesum\", \"liveall\", ... \"max\".")},
        {nullptr, nullptr, 0, nullptr},
    };
    return m;
}

// ---------------------------------------------------------------- arrays

PyTypeObject* g_element_types[2][vt_count] = {};  // [mutex][vt]

template <class A>
Py_ssize_t arr_len(PyObject* self) {
    return static_cast<Py_ssize_t>(obj<A>(self).size());
}

template <class A>
PyObject* arr_item(PyObject* self, PyObject* key) {
    Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) return nullptr;
    A& a = obj<A>(self);
    const auto n = static_cast<Py_ssize_t>(a.size());
    if (i < 0) i += n;
    return guarded([&]() -> PyObject* {
        auto& e = a.at(static_cast<std::size_t>(i < 0 ? n : i));  // out_of_range names the array
        auto* h = reinterpret_cast<Handle*>(self);
        using T = typename A::element_type::value_type;
        constexpr int m = std::is_same_v<typename A::element_type::sync_type, ps::mutex_sync> ? 1 : 0;
        return reinterpret_cast<PyObject*>(new_handle(g_element_types[m][vt_of<T>()], &e, self, h->name, m ? k_mutex : k_atomic,
                                                      vt_of<T>(), i));
    });
}

template <class A>
PyObject* arr_values(PyObject* self, PyObject*) {
    A& a = obj<A>(self);
    return guarded([&]() -> PyObject* {
        return list_of(a.size(), [&](std::size_t i) { return to_py(a[i].value()); });
    });
}

template <class A>
PyObject* arr_size(PyObject* self, PyObject*) {
    return PyLong_FromSize_t(obj<A>(self).size());
}

template <class A>
PyMethodDef* array_methods() {
    static PyMethodDef m[] = {
        {"values", arr_values<A>, METH_NOARGS, PS_DOC("values($self, /)", "Every element's value, as a list.")},
        {"size", arr_size<A>, METH_NOARGS, PS_DOC("size($self, /)", "The number of elements (also len()).")},
        {nullptr, nullptr, 0, nullptr},
    };
    return m;
}

// ------------------------------------------------------ histogram, latch, barrier

PyTypeObject* g_snapshot_type = nullptr;
PyStructSequence_Field snapshot_fields[] = {
    {"bounds", "the buckets' upper bounds (the +Inf bucket's not included)"},
    {"counts", "per-bucket counts, not cumulative; the last is +Inf"},
    {"sum", "the sum of what was observed"},
    {"count", "the number of observations"},
    {nullptr, nullptr},
};
PyStructSequence_Desc snapshot_desc = {"procsafe.HistogramSnapshot", "What Histogram.read() returns.", snapshot_fields, 4};

PyObject* hist_observe(PyObject* self, PyObject* arg) {
    const double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred()) return nullptr;
    obj<ps::histogram>(self).observe(v);
    Py_RETURN_NONE;
}

PyObject* hist_read(PyObject* self, PyObject*) {
    return guarded([&]() -> PyObject* {
        const auto s = obj<ps::histogram>(self).read();
        PyObject* r = PyStructSequence_New(g_snapshot_type);
        if (r == nullptr) return nullptr;
        PyObject* bounds = PyTuple_New(static_cast<Py_ssize_t>(s.bounds.size()));
        PyObject* counts = PyTuple_New(static_cast<Py_ssize_t>(s.counts.size()));
        if (bounds == nullptr || counts == nullptr) {
            Py_XDECREF(bounds);
            Py_XDECREF(counts);
            Py_DECREF(r);
            return nullptr;
        }
        for (std::size_t i = 0; i < s.bounds.size(); ++i) PyTuple_SET_ITEM(bounds, i, PyFloat_FromDouble(s.bounds[i]));
        for (std::size_t i = 0; i < s.counts.size(); ++i) PyTuple_SET_ITEM(counts, i, PyLong_FromUnsignedLongLong(s.counts[i]));
        PyStructSequence_SetItem(r, 0, bounds);
        PyStructSequence_SetItem(r, 1, counts);
        PyStructSequence_SetItem(r, 2, PyFloat_FromDouble(s.sum));
        PyStructSequence_SetItem(r, 3, PyLong_FromUnsignedLongLong(s.count));
        if (PyErr_Occurred()) {
            Py_DECREF(r);
            return nullptr;
        }
        return r;
    });
}


PyMethodDef hist_methods[] = {
    {"observe", hist_observe, METH_O, PS_DOC("observe($self, v, /)", "Counts v in its bucket and adds it to the sum.")},
    {"read", hist_read, METH_NOARGS, PS_DOC("read($self, /)", "A HistogramSnapshot(bounds, counts, sum, count), added up over the rows.")},
    {"reset", call0<ps::histogram, &ps::histogram::reset>, METH_NOARGS,
     PS_DOC("reset($self, /)", "Zeroes the buckets and the sum (exact only when no writer runs).")},
    {"buckets", call0<ps::histogram, &ps::histogram::buckets>, METH_NOARGS, PS_DOC("buckets($self, /)", "The number of buckets, +Inf included.")},
    {nullptr, nullptr, 0, nullptr},
};

bool parse_count(PyObject* o, std::ptrdiff_t& out) {
    const Py_ssize_t n = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) return false;
    out = n;
    return true;
}

PyObject* latch_count_down(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    std::ptrdiff_t n = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "count_down(n=1) takes at most 1 argument");
        return nullptr;
    }
    if (nargs == 1 && !parse_count(args[0], n)) return nullptr;
    return guarded([&] {
        obj<ps::latch>(self).count_down(n);
        Py_RETURN_NONE;
    });
}

PyObject* latch_wait_common(PyObject* self, PyObject* timeout) {
    time_point deadline;
    if (!parse_deadline(timeout, deadline)) return nullptr;
    ps::latch& l = obj<ps::latch>(self);
    return guarded([&] { return sliced_wait(deadline, [&](time_point until) { return l.wait_until(until); }); });
}
PyObject* latch_wait(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"timeout", nullptr};
    PyObject* timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", const_cast<char**>(kwlist), &timeout)) return nullptr;
    return latch_wait_common(self, timeout);
}
PyObject* latch_arrive_and_wait(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"n", "timeout", nullptr};
    Py_ssize_t n = 1;
    PyObject* timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|nO:arrive_and_wait", const_cast<char**>(kwlist), &n, &timeout)) return nullptr;
    time_point deadline;
    if (!parse_deadline(timeout, deadline)) return nullptr;
    PyObject* r = guarded([&] {
        obj<ps::latch>(self).count_down(n);
        Py_RETURN_NONE;
    });
    if (r == nullptr) return nullptr;
    Py_DECREF(r);
    return latch_wait_common(self, timeout);
}

PyMethodDef latch_methods[] = {
    {"count_down", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(latch_count_down)), METH_FASTCALL,
     PS_DOC("count_down($self, n=1, /)", "Counts down by n; refuses (InvalidArgument) more than is left.")},
    {"try_wait", call0<ps::latch, &ps::latch::try_wait>, METH_NOARGS, PS_DOC("try_wait($self, /)", "True once the count is zero.")},
    {"count", call0<ps::latch, &ps::latch::count>, METH_NOARGS, PS_DOC("count($self, /)", "The count left (a snapshot).")},
    {"wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(latch_wait)), METH_VARARGS | METH_KEYWORDS,
     PS_DOC("wait($self, /, timeout=None)", "Blocks until the count is zero, at most timeout seconds; returns whether it is.")},
    {"arrive_and_wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(latch_arrive_and_wait)),
     METH_VARARGS | METH_KEYWORDS, PS_DOC("arrive_and_wait($self, /, n=1, timeout=None)", "count_down(n), then wait(timeout).")},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* barrier_arrive(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    std::ptrdiff_t n = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "arrive(n=1) takes at most 1 argument");
        return nullptr;
    }
    if (nargs == 1 && !parse_count(args[0], n)) return nullptr;
    return guarded([&] { return PyLong_FromUnsignedLong(obj<ps::barrier>(self).arrive(n)); });
}
PyObject* barrier_wait_token(PyObject* self, unsigned long token, PyObject* timeout) {
    time_point deadline;
    if (!parse_deadline(timeout, deadline)) return nullptr;
    ps::barrier& b = obj<ps::barrier>(self);
    const auto t = static_cast<ps::barrier::arrival_token>(token);
    return guarded([&] {
        return sliced_wait(deadline, [&](time_point until) {
            const auto left = until - steady::now();
            return b.wait_for(t, left > steady::duration::zero() ? left : steady::duration::zero());
        });
    });
}
PyObject* barrier_wait(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"token", "timeout", nullptr};
    unsigned long token = 0;
    PyObject* timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "k|O:wait", const_cast<char**>(kwlist), &token, &timeout)) return nullptr;
    return barrier_wait_token(self, token, timeout);
}
PyObject* barrier_arrive_and_wait(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"timeout", nullptr};
    PyObject* timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:arrive_and_wait", const_cast<char**>(kwlist), &timeout)) return nullptr;
    unsigned long token = 0;
    PyObject* r = guarded([&] {
        token = obj<ps::barrier>(self).arrive(1);
        Py_RETURN_NONE;
    });
    if (r == nullptr) return nullptr;
    Py_DECREF(r);
    return barrier_wait_token(self, token, timeout);
}
PyObject* barrier_drop(PyObject* self, PyObject*) {
    return guarded([&] {
        obj<ps::barrier>(self).arrive_and_drop();
        Py_RETURN_NONE;
    });
}

PyMethodDef barrier_methods[] = {
    {"arrive", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(barrier_arrive)), METH_FASTCALL,
     PS_DOC("arrive($self, n=1, /)", "Arrives n times in the current phase; returns its token (for wait).")},
    {"wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(barrier_wait)), METH_VARARGS | METH_KEYWORDS,
     PS_DOC("wait($self, /, token, timeout=None)", "Blocks until the phase of token completed; returns whether it did in time.")},
    {"arrive_and_wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(barrier_arrive_and_wait)),
     METH_VARARGS | METH_KEYWORDS,
     PS_DOC("arrive_and_wait($self, /, timeout=None)", "arrive(), then wait for that phase; returns whether it completed in time.")},
    {"arrive_and_drop", barrier_drop, METH_NOARGS,
     PS_DOC("arrive_and_drop($self, /)", "Arrives, and is no longer expected in later phases.")},
    {"phase", call0<ps::barrier, &ps::barrier::phase>, METH_NOARGS, PS_DOC("phase($self, /)", "The number of completed phases (modulo 2**32).")},
    {"expected", call0<ps::barrier, &ps::barrier::expected>, METH_NOARGS, PS_DOC("expected($self, /)", "Participants expected in later phases.")},
    {"missing", call0<ps::barrier, &ps::barrier::missing>, METH_NOARGS, PS_DOC("missing($self, /)", "Arrivals the current phase still misses.")},
    {nullptr, nullptr, 0, nullptr},
};

// ------------------------------------------------------- Lock, RLock, Value

using lock_counter = ps::mutex_counter<std::uint64_t>;

struct LockObj {
    Handle h;
    std::optional<lock_counter::held_lock> held;  // constructed in place at allocation
    bool recursive;
    unsigned long thread;
    long pid;
    long depth;
};
PyTypeObject* g_lock_type = nullptr;

void lock_dealloc(PyObject* self) {
    auto* l = reinterpret_cast<LockObj*>(self);
    if (l->held && l->pid == self_pid()) holders().erase(l->h.ptr);
    if (l->pid == self_pid()) l->held.reset();  // unlocks
    else if (l->held) l->held.reset();  // inherited across fork: not ours; the unlock is refused (EPERM)
    l->held.~optional();
    handle_dealloc(self);
}

/// Takes the lock (RLock: again, by its owner thread). 1 taken, 0 not, -1 error.
int lock_acquire_impl(LockObj* l, bool block, time_point deadline) {
    const unsigned long me = PyThread_get_thread_ident();
    const long pid = self_pid();
    if (l->depth > 0 && l->pid != pid) {  // held by the parent when this process forked: not ours
        l->held.reset();
        l->depth = 0;
    }
    if (l->depth > 0 && l->thread == me) {
        if (l->recursive) {
            ++l->depth;
            return 1;
        }
        if (!block) return 0;
        if (deadline == time_point::max()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "procsafe: this thread already holds this Lock: acquiring it again would never return "
                            "(use an RLock)");
            return -1;
        }
        PyObject* r = guarded([&] { return sliced_wait(deadline, [](time_point until) {
            std::this_thread::sleep_until(until);
            return false;
        }); });
        if (r == nullptr) return -1;
        Py_DECREF(r);
        return 0;
    }
    auto& c = *static_cast<lock_counter*>(l->h.ptr);
    // Taken into a local, not into l->held: another thread of this process
    // may hold the lock through l->held now (a waiter that timed out, or was
    // interrupted, must not take it for its own or let it go), and the wait
    // runs without the GIL.
    std::optional<lock_counter::held_lock> got;
    lock_status s = lock_status::failed;
    PyObject* r = guarded([&] {
        s = take_lock(c, got, block, deadline);
        Py_RETURN_NONE;
    });
    if (r == nullptr) return -1;
    Py_DECREF(r);
    if (s != lock_status::acquired) return s == lock_status::failed ? -1 : 0;
    l->held.emplace(std::move(*got));
    l->thread = me;
    l->pid = pid;
    l->depth = 1;
    holders().set(l->h.ptr, me);
    return 1;
}

int lock_release_impl(LockObj* l) {
    if (l->depth == 0 || l->thread != PyThread_get_thread_ident() || l->pid != self_pid()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "procsafe: cannot release a lock this thread does not hold (a robust lock is released by the "
                        "thread that took it)");
        return -1;
    }
    if (--l->depth == 0) {
        holders().erase(l->h.ptr);
        l->held.reset();
    }
    return 0;
}

PyObject* lock_acquire(PyObject* self, PyObject* args, PyObject* kw) {
    // multiprocessing's acquire(block=True, timeout=None) and threading's
    // acquire(blocking=True, timeout=-1): either name, and -1 is no timeout.
    static const char* kwlist[] = {"block", "timeout", "blocking", nullptr};
    int block = 1, blocking = -1;
    PyObject* timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pO$p:acquire", const_cast<char**>(kwlist), &block, &timeout, &blocking))
        return nullptr;
    if (blocking != -1) block = blocking;
    if (timeout != Py_None && PyNumber_Check(timeout)) {
        const double t = PyFloat_AsDouble(timeout);
        if (t == -1.0) {
            if (PyErr_Occurred()) return nullptr;
            timeout = Py_None;
        }
    }
    time_point deadline;
    if (!parse_deadline(timeout, deadline)) return nullptr;
    const int r = lock_acquire_impl(reinterpret_cast<LockObj*>(self), block != 0, deadline);
    if (r < 0) return nullptr;
    return PyBool_FromLong(r);
}
PyObject* lock_enter(PyObject* self, PyObject*) {
    const int r = lock_acquire_impl(reinterpret_cast<LockObj*>(self), true, time_point::max());
    if (r < 0) return nullptr;
    Py_RETURN_TRUE;
}
PyObject* lock_release(PyObject* self, PyObject*) {
    if (lock_release_impl(reinterpret_cast<LockObj*>(self)) < 0) return nullptr;
    Py_RETURN_NONE;
}
PyObject* lock_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
    if (lock_release_impl(reinterpret_cast<LockObj*>(self)) < 0) return nullptr;
    Py_RETURN_FALSE;
}
/// threading.Lock's locked(): held by anyone (this thread, another, another
/// process). A free lock is tried and let go at once: a holder found dead is
/// recovered, as the next locker would.
PyObject* lock_locked(PyObject* self, PyObject*) {
    auto* l = reinterpret_cast<LockObj*>(self);
    if (l->depth > 0 && l->pid == self_pid()) Py_RETURN_TRUE;
    return guarded([&]() -> PyObject* {
        auto h = static_cast<lock_counter*>(l->h.ptr)->try_lock_until(time_point::min());
        return PyBool_FromLong(h ? 0 : 1);
    });
}
PyObject* lock_is_owned(PyObject* self, PyObject*) {
    auto* l = reinterpret_cast<LockObj*>(self);
    return PyBool_FromLong(l->depth > 0 && l->thread == PyThread_get_thread_ident() && l->pid == self_pid());
}
PyObject* lock_reduce(PyObject* self, PyObject*) {
    auto* l = reinterpret_cast<LockObj*>(self);
    SegmentObj* s = segment_of(&l->h);
    if (s->seg->name().empty()) {
        PyErr_SetString(PyExc_TypeError, "procsafe: a lock in an anonymous segment cannot be pickled");
        return nullptr;
    }
    PyObject* f = procsafe_attr("_attach_lock");
    if (f == nullptr) return nullptr;
    return Py_BuildValue("N(sOO)", f, s->seg->name().c_str(), l->h.name, l->recursive ? Py_True : Py_False);
}
PyObject* lock_repr(PyObject* self) {
    auto* l = reinterpret_cast<LockObj*>(self);
    const std::string seg = segment_name(segment_of(&l->h));
    return PyUnicode_FromFormat("<procsafe.%s %R in segment '%s', %s>", l->recursive ? "RLock" : "Lock", l->h.name, seg.c_str(),
                                l->depth > 0 && l->pid == self_pid() ? "held here" : "not held here");
}
PyObject* lock_recoveries(PyObject* self, void*) {
    return PyLong_FromUnsignedLong(static_cast<lock_counter*>(reinterpret_cast<Handle*>(self)->ptr)->recoveries());
}

PyMethodDef lock_methods[] = {
    {"acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(lock_acquire)), METH_VARARGS | METH_KEYWORDS,
     PS_DOC("acquire($self, /, block=True, timeout=None, *, blocking=True)",
            "Takes the lock; returns whether it did. Waits without the GIL; Ctrl-C raises KeyboardInterrupt.\n"
            "blocking is threading's name for block; a timeout of None or -1 waits for as long as it takes.\n"
            "A holder killed with the lock held does not stall anyone: the next locker recovers it.")},
    {"release", lock_release, METH_NOARGS, PS_DOC("release($self, /)", "Releases the lock (by the thread that took it).")},
    {"locked", lock_locked, METH_NOARGS, PS_DOC("locked($self, /)", "True when some thread or process holds the lock.")},
    {"__enter__", lock_enter, METH_NOARGS, "Takes the lock."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(lock_exit)), METH_FASTCALL, "Releases the lock."},
    {"_is_owned", lock_is_owned, METH_NOARGS, "True when this thread holds the lock."},
    {"__reduce__", lock_reduce, METH_NOARGS, "Pickles as a reference to the segment and the object."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef lock_getset[] = {
    {"name", handle_get_name, nullptr, "The lock's object name.", nullptr},
    {"segment", handle_get_segment, nullptr, "The Segment the lock lives in.", nullptr},
    {"recoveries", lock_recoveries, nullptr, "How many times a locker found the owner dead and recovered the lock.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* new_lock(PyObject* owner, PyObject* name, lock_counter& c, bool recursive) {
    auto* l = reinterpret_cast<LockObj*>(new_handle(g_lock_type, &c, owner, name, k_lock, -1));
    if (l == nullptr) return nullptr;
    ::new (&l->held) std::optional<lock_counter::held_lock>();
    l->recursive = recursive;
    l->thread = 0;
    l->pid = 0;
    l->depth = 0;
    return reinterpret_cast<PyObject*>(l);
}

/// Value(typecode): an atomic counter of the typecode's C type, and the
/// lock .value takes (None for a RawValue).
struct ValueObj {
    Handle h;
    PyObject* lock;
    char typecode;
};
PyTypeObject* g_value_types[vt_count] = {};

void value_dealloc(PyObject* self) {
    Py_CLEAR(reinterpret_cast<ValueObj*>(self)->lock);
    handle_dealloc(self);
}

PyObject* new_value(PyObject* owner, PyObject* name, void* counter, int t, char typecode, PyObject* lock) {
    auto* v = reinterpret_cast<ValueObj*>(new_handle(g_value_types[t], counter, owner, name, k_value, t));
    if (v == nullptr) return nullptr;
    v->lock = Py_XNewRef(lock);
    v->typecode = typecode;
    return reinterpret_cast<PyObject*>(v);
}

LockObj* value_lock(PyObject* self) {
    PyObject* l = reinterpret_cast<ValueObj*>(self)->lock;
    return l == nullptr ? nullptr : reinterpret_cast<LockObj*>(l);
}

template <class T>
PyObject* v_add(PyObject* self, PyObject* arg) {
    T n;
    if (!from_py_wrapping(arg, n)) return nullptr;
    return to_py(obj<ps::atomic_counter<T>>(self).increment(n));
}
template <class T>
PyObject* v_increment(PyObject* self, PyObject*) {
    return to_py(obj<ps::atomic_counter<T>>(self).increment());
}
template <class T>
PyObject* v_get(PyObject* self, void*) {
    LockObj* l = value_lock(self);
    if (l == nullptr) return to_py(obj<ps::atomic_counter<T>>(self).value());
    if (lock_acquire_impl(l, true, time_point::max()) < 0) return nullptr;
    PyObject* r = to_py(obj<ps::atomic_counter<T>>(self).value());
    lock_release_impl(l);
    return r;
}
template <class T>
int v_set(PyObject* self, PyObject* arg, void*) {
    if (arg == nullptr) {
        PyErr_SetString(PyExc_AttributeError, "procsafe: .value cannot be deleted");
        return -1;
    }
    T n;
    if (!from_py_wrapping(arg, n)) return -1;
    LockObj* l = value_lock(self);
    if (l == nullptr) {
        obj<ps::atomic_counter<T>>(self).store(n);
        return 0;
    }
    if (lock_acquire_impl(l, true, time_point::max()) < 0) return -1;
    obj<ps::atomic_counter<T>>(self).store(n);
    lock_release_impl(l);
    return 0;
}

PyObject* value_get_lock(PyObject* self, PyObject*) {
    PyObject* l = reinterpret_cast<ValueObj*>(self)->lock;
    if (l == nullptr) {
        PyErr_SetString(PyExc_AttributeError, "procsafe: a RawValue has no lock (get_lock); use Value, or add()");
        return nullptr;
    }
    return Py_NewRef(l);
}
PyObject* value_get_obj(PyObject* self, PyObject*) {
    auto* v = reinterpret_cast<ValueObj*>(self);
    return new_value(v->h.owner, v->h.name, v->h.ptr, v->h.type, v->typecode, nullptr);
}
PyObject* value_acquire(PyObject* self, PyObject* args, PyObject* kw) {
    PyObject* l = reinterpret_cast<ValueObj*>(self)->lock;
    if (l == nullptr) return value_get_lock(self, nullptr);
    return lock_acquire(l, args, kw);
}
PyObject* value_release(PyObject* self, PyObject*) {
    PyObject* l = reinterpret_cast<ValueObj*>(self)->lock;
    if (l == nullptr) return value_get_lock(self, nullptr);
    return lock_release(l, nullptr);
}
PyObject* value_enter(PyObject* self, PyObject*) {
    PyObject* l = reinterpret_cast<ValueObj*>(self)->lock;
    if (l == nullptr) return value_get_lock(self, nullptr);
    return lock_enter(l, nullptr);
}
PyObject* value_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    PyObject* l = reinterpret_cast<ValueObj*>(self)->lock;
    if (l == nullptr) return value_get_lock(self, nullptr);
    return lock_exit(l, args, nargs);
}
PyObject* value_reduce(PyObject* self, PyObject*) {
    auto* v = reinterpret_cast<ValueObj*>(self);
    SegmentObj* s = segment_of(&v->h);
    if (s->seg->name().empty()) {
        PyErr_SetString(PyExc_TypeError, "procsafe: a value in an anonymous segment cannot be pickled");
        return nullptr;
    }
    PyObject* f = procsafe_attr("_attach_value");
    if (f == nullptr) return nullptr;
    return Py_BuildValue("N(sOCO)", f, s->seg->name().c_str(), v->h.name, static_cast<int>(v->typecode),
                         v->lock ? v->lock : Py_None);
}

template <class T>
PyObject* value_repr(PyObject* self) {
    auto* v = reinterpret_cast<ValueObj*>(self);
    PyObject* val = to_py(obj<ps::atomic_counter<T>>(self).value());
    if (val == nullptr) return nullptr;
    PyObject* r = PyUnicode_FromFormat("<procsafe.%s('%c', %R)>", v->lock ? "Value" : "RawValue", v->typecode, val);
    Py_DECREF(val);
    return r;
}

PyObject* value_get_typecode(PyObject* self, void*) {
    return PyUnicode_FromOrdinal(static_cast<unsigned char>(reinterpret_cast<ValueObj*>(self)->typecode));
}

template <class T>
PyMethodDef* value_methods() {
    static PyMethodDef m[] = {
        {"add", v_add<T>, METH_O,
         PS_DOC("add($self, n, /)", "Atomically adds n (no lock needed; integers wrap at the typecode's width); returns the new value.")},
        {"increment", v_increment<T>, METH_NOARGS, PS_DOC("increment($self, /)", "Atomically adds one; returns the new value.")},
        {"get_lock", value_get_lock, METH_NOARGS, PS_DOC("get_lock($self, /)", "The RLock .value takes (as multiprocessing's).")},
        {"get_obj", value_get_obj, METH_NOARGS, PS_DOC("get_obj($self, /)", "The raw shared value, without the lock.")},
        {"acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(value_acquire)), METH_VARARGS | METH_KEYWORDS,
         PS_DOC("acquire($self, /, block=True, timeout=None)", "get_lock().acquire(...)")},
        {"release", value_release, METH_NOARGS, PS_DOC("release($self, /)", "get_lock().release()")},
        {"__enter__", value_enter, METH_NOARGS, "Takes the lock."},
        {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(value_exit)), METH_FASTCALL, "Releases the lock."},
        {"__reduce__", value_reduce, METH_NOARGS, "Pickles as a reference to the segment and the object."},
        {nullptr, nullptr, 0, nullptr},
    };
    return m;
}
template <class T>
PyGetSetDef* value_getset() {
    static PyGetSetDef g[] = {
        {"value", v_get<T>, v_set<T>,
         "The value; read and written under the lock for a Value (as multiprocessing's), without for a RawValue.\n"
         "An integer is stored modulo 2**bits, as ctypes does.",
         nullptr},
        {"_type_", value_get_typecode, nullptr, "The typecode.", nullptr},
        {"name", handle_get_name, nullptr, "The object's name in its segment.", nullptr},
        {"segment", handle_get_segment, nullptr, "The Segment the value lives in.", nullptr},
        {nullptr, nullptr, nullptr, nullptr, nullptr},
    };
    return g;
}

// ------------------------------------------------------- the no-op (benchmarks)

PyObject* noop(PyObject*, PyObject*) { Py_RETURN_NONE; }
PyMethodDef noop_methods[] = {
    {"noop", noop, METH_NOARGS, PS_DOC("noop($self, /)", "Does nothing: the floor a METH_NOARGS call costs.")},
    {"noop1", noop, METH_O, PS_DOC("noop1($self, x, /)", "Does nothing with x: the floor a METH_O call (add(n)'s) costs.")},
    {nullptr, nullptr, 0, nullptr},
};
PyObject* noop_new(PyTypeObject* tp, PyObject*, PyObject*) {
    PyObject* empty = PyUnicode_FromString("noop");
    if (empty == nullptr) return nullptr;
    Handle* h = new_handle(tp, nullptr, Py_None, empty, k_noop, -1);
    Py_DECREF(empty);
    return reinterpret_cast<PyObject*>(h);
}

// ---------------------------------------------------------------- types by kind

PyTypeObject* g_types[k_lock][vt_count] = {};  // counters, arrays, sharded, gauges by value type
PyTypeObject* g_single[k_lock] = {};            // histogram, latch, barrier
PyObject* g_bases = nullptr;                    // dict: public base classes by name

PyObject* make_base(const char* name, const char* doc) {
    static PyMethodDef reduce_methods[] = {
        {"__reduce__", handle_reduce, METH_NOARGS, "Pickles as a reference to the segment and the object."},
        {"exported", handle_exported, METH_NOARGS,
         PS_DOC("exported($self, /)", "True unless the object was taken out of the exposition (set_exported(False)).")},
        {"set_exported", handle_set_exported, METH_O,
         PS_DOC("set_exported($self, exported, /)",
                "Takes the object out of procsafe's Prometheus exposition (False: `procsafe export`, ProcsafeCollector), or\n"
                "puts it back (True), for every process; returns whether it was exported before. The object, its\n"
                "values and its name stay (segment objects are never freed). Lock-free after the first call.")},
        {nullptr, nullptr, 0, nullptr},
    };
    PyTypeObject* t = make_type(std::string("procsafe.") + name, nullptr, reduce_methods, handle_getset, doc);
    if (t == nullptr) return nullptr;
    if (PyDict_SetItemString(g_bases, name, reinterpret_cast<PyObject*>(t)) < 0) return nullptr;
    return reinterpret_cast<PyObject*>(t);
}

bool make_types() {
    g_bases = PyDict_New();
    if (g_bases == nullptr) return false;
    PyObject* atomic = make_base("AtomicCounter", "A lock-free shared counter (one atomic instruction an operation).");
    PyObject* mutex = make_base("MutexCounter", "A shared counter under a robust process-shared lock.");
    PyObject* sharded = make_base("ShardedCounter", "A counter split in per-thread slots; sum() adds them up.");
    PyObject* gauge = make_base("LiveGauge", "A gauge: the sum of the contributions of the processes that still run.");
    PyObject* array = make_base("CounterArray", "N counters under one name: arr[i] is a counter.");
    PyObject* hist = make_base("Histogram", "A histogram across processes (Prometheus' buckets, sum and count).");
    PyObject* latch = make_base("Latch", "A single-use countdown across processes (std::latch).");
    PyObject* barrier = make_base("Barrier", "A reusable barrier for processes (std::barrier).");
    if (!atomic || !mutex || !sharded || !gauge || !array || !hist || !latch || !barrier) return false;

    bool ok = true;
    auto each = [&]<class T>() -> PyObject* {
        const std::string t = vt_names[vt_of<T>()];
        auto mk = [&](int, const char* base_name, PyObject* base, PyMethodDef* m, PyGetSetDef* g,
                      std::vector<PyType_Slot> extra = {}) {
            PyTypeObject* tp = make_type(std::string("procsafe.") + base_name + "[" + t + "]", base, m, g, nullptr, std::move(extra));
            if (tp == nullptr) ok = false;
            return tp;
        };
        g_types[k_atomic][vt_of<T>()] = mk(k_atomic, "AtomicCounter", atomic, counter_methods<ps::atomic_counter<T>>(),
                                           counter_getset<ps::atomic_counter<T>>());
        g_types[k_mutex][vt_of<T>()] = mk(k_mutex, "MutexCounter", mutex, counter_methods<ps::mutex_counter<T>>(),
                                          counter_getset<ps::mutex_counter<T>>());
        g_element_types[0][vt_of<T>()] = mk(k_atomic, "AtomicCounter", atomic,
                                            counter_methods<ps::basic_counter<T, ps::atomic_sync>>(),
                                            counter_getset<ps::basic_counter<T, ps::atomic_sync>>());
        g_element_types[1][vt_of<T>()] = mk(k_mutex, "MutexCounter", mutex,
                                            counter_methods<ps::basic_counter<T, ps::mutex_sync>>(),
                                            counter_getset<ps::basic_counter<T, ps::mutex_sync>>());
        using AA = ps::counter_array<T, ps::atomic_sync>;
        using MA = ps::counter_array<T, ps::mutex_sync>;
        g_types[k_atomic_array][vt_of<T>()] =
            mk(k_atomic_array, "CounterArray", array, array_methods<AA>(), nullptr,
               {{Py_mp_length, reinterpret_cast<void*>(arr_len<AA>)}, {Py_mp_subscript, reinterpret_cast<void*>(arr_item<AA>)},
                {Py_sq_length, reinterpret_cast<void*>(arr_len<AA>)}});
        g_types[k_mutex_array][vt_of<T>()] =
            mk(k_mutex_array, "CounterArray", array, array_methods<MA>(), nullptr,
               {{Py_mp_length, reinterpret_cast<void*>(arr_len<MA>)}, {Py_mp_subscript, reinterpret_cast<void*>(arr_item<MA>)},
                {Py_sq_length, reinterpret_cast<void*>(arr_len<MA>)}});
        if constexpr (std::is_integral_v<T>) {
            g_types[k_sharded][vt_of<T>()] = mk(k_sharded, "ShardedCounter", sharded, sharded_methods<ps::sharded_counter<T>>(), nullptr);
        }
        g_types[k_live_gauge][vt_of<T>()] = mk(k_live_gauge, "LiveGauge", gauge, gauge_methods<ps::live_gauge<T>>(), nullptr);
        PyTypeObject* vtp = make_type(std::string("procsafe.SharedValue[") + t + "]", nullptr, value_methods<T>(), value_getset<T>(),
                                      "What procsafe.Value and procsafe.RawValue return.",
                                      {{Py_tp_dealloc, reinterpret_cast<void*>(value_dealloc)},
                                       {Py_tp_repr, reinterpret_cast<void*>(value_repr<T>)}},
                                      sizeof(ValueObj));
        if (vtp == nullptr) ok = false;
        g_value_types[vt_of<T>()] = vtp;
        return Py_None;
    };
    for (int t = 0; t < vt_count; ++t) dispatch(t, each);
    if (!ok) return false;
    g_single[k_histogram] = make_type("procsafe.Histogram[float64]", hist, hist_methods, nullptr, nullptr);
    g_single[k_latch] = make_type("procsafe.Latch[int64]", latch, latch_methods, nullptr, nullptr);
    g_single[k_barrier] = make_type("procsafe.Barrier[uint64]", barrier, barrier_methods, nullptr, nullptr);
    g_lock_type = make_type("procsafe.SharedLock", nullptr, lock_methods, lock_getset,
                            "What procsafe.Lock and procsafe.RLock return: a robust process-shared lock.",
                            {{Py_tp_dealloc, reinterpret_cast<void*>(lock_dealloc)}, {Py_tp_repr, reinterpret_cast<void*>(lock_repr)}},
                            sizeof(LockObj));
    {
        type_names().push_back("procsafe.Locked");
        PyType_Slot slots[] = {
            {Py_tp_dealloc, reinterpret_cast<void*>(locked_dealloc)},
            {Py_tp_methods, locked_methods},
            {Py_tp_getset, locked_getset},
            {Py_tp_doc, const_cast<char*>("A mutex counter's locked() block.")},
            {0, nullptr},
        };
        PyType_Spec spec{type_names().back().c_str(), sizeof(LockedObj), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE, slots};
        g_locked_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec));
    }
    g_snapshot_type = PyStructSequence_NewType(&snapshot_desc);
    return g_single[k_histogram] && g_single[k_latch] && g_single[k_barrier] && g_lock_type && g_locked_type && g_snapshot_type;
}

// ---------------------------------------------------------------- Segment

SegmentObj* new_segment(ps::segment s) {
    auto* o = reinterpret_cast<SegmentObj*>(g_segment_type->tp_alloc(g_segment_type, 0));
    if (o == nullptr) return nullptr;
    o->seg = new ps::segment(std::move(s));
    o->creator = self_pid();
    o->closed = false;
    o->weakrefs = nullptr;
    return o;
}

void segment_dealloc(PyObject* self) {
    auto* s = reinterpret_cast<SegmentObj*>(self);
    PyTypeObject* tp = Py_TYPE(self);
    if (s->weakrefs != nullptr) PyObject_ClearWeakRefs(self);
    try {
        delete s->seg;  // the creating process's owner removes the named segment; a forked child never does
    } catch (...) {
    }
    s->seg = nullptr;
    tp->tp_free(self);
    Py_DECREF(tp);
}

/// A size in bytes: refused as InvalidArgument when not positive.
bool parse_size(PyObject* o, std::size_t& out, const char* what) {
    PyObject* n = PyNumber_Index(o);
    if (n == nullptr) return false;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(n, &overflow);
    Py_DECREF(n);
    if (v == -1 && PyErr_Occurred()) return false;
    if (overflow != 0 || v <= 0) {
        set_error(ps::errc::invalid_argument, {}, {}, std::string(what) + " must be a positive number of bytes");
        return false;
    }
    out = static_cast<std::size_t>(v);
    return true;
}

bool parse_mode(PyObject* o, unsigned& out) {
    if (o == nullptr) {
        out = 0600;
        return true;
    }
    const long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return false;
    if (v < 0 || v > 07777) {
        set_error(ps::errc::invalid_argument, {}, {}, "mode must be permission bits (0o600, 0o640...)");
        return false;
    }
    out = static_cast<unsigned>(v);
    return true;
}

std::chrono::milliseconds to_ms(PyObject* timeout, bool& ok) {
    ok = true;
    if (timeout == nullptr) return ps::segment::default_timeout;
    if (timeout == Py_None) return std::chrono::milliseconds::max();
    const double s = PyFloat_AsDouble(timeout);
    if ((s == -1.0 && PyErr_Occurred()) || std::isnan(s)) {
        if (!PyErr_Occurred()) set_error(ps::errc::invalid_argument, {}, {}, "a timeout is a number of seconds or None");
        ok = false;
        return {};
    }
    if (s <= 0) return std::chrono::milliseconds(0);
    if (s > 1e12) return std::chrono::milliseconds::max();
    return std::chrono::milliseconds(static_cast<long long>(std::ceil(s * 1000)));
}

PyObject* seg_create(PyObject*, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "size", "mode", "replace_orphan", "timeout", nullptr};
    const char* name;
    Py_ssize_t len;
    PyObject *size_obj, *mode_obj = nullptr, *timeout = nullptr;
    int replace_orphan = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s#O|O$pO:create", const_cast<char**>(kwlist), &name, &len, &size_obj, &mode_obj,
                                     &replace_orphan, &timeout))
        return nullptr;
    std::size_t size;
    unsigned mode;
    bool ok;
    if (!parse_size(size_obj, size, "size") || !parse_mode(mode_obj, mode)) return nullptr;
    const auto t = to_ms(timeout, ok);
    if (!ok) return nullptr;
    return guarded([&] {
        const std::string_view n(name, len);
        if (replace_orphan == 0) return reinterpret_cast<PyObject*>(new_segment(ps::segment::create(n, size, mode)));
        return reinterpret_cast<PyObject*>(new_segment(ps::segment::create(n, size, mode, ps::create_mode::replace_orphan, t)));
    });
}

/// Segment.info(name): facts about a named segment, read through segment_view
/// (read-only, no lock): its creator's pid and whether it still runs.
PyObject* seg_info(PyObject*, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", nullptr};
    const char* name;
    Py_ssize_t len;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s#:info", const_cast<char**>(kwlist), &name, &len)) return nullptr;
    return guarded([&]() -> PyObject* {
        const ps::segment_info i = ps::segment_view::open(std::string_view(name, len)).info();
        return Py_BuildValue("{s:N,s:n,s:n,s:k,s:O,s:K}", "name", decode(i.name), "size", static_cast<Py_ssize_t>(i.size),
                             "objects", static_cast<Py_ssize_t>(i.objects), "creator_pid", static_cast<unsigned long>(i.creator_pid),
                             "creator_alive", i.creator_alive ? Py_True : Py_False, "created_ns",
                             static_cast<unsigned long long>(i.created_ns));
    });
}

PyObject* seg_open_or_create(PyObject*, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "size", "mode", "timeout", nullptr};
    const char* name;
    Py_ssize_t len;
    PyObject *size_obj, *mode_obj = nullptr, *timeout = nullptr;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s#O|OO:open_or_create", const_cast<char**>(kwlist), &name, &len, &size_obj,
                                     &mode_obj, &timeout))
        return nullptr;
    std::size_t size;
    unsigned mode;
    bool ok;
    if (!parse_size(size_obj, size, "size") || !parse_mode(mode_obj, mode)) return nullptr;
    const auto t = to_ms(timeout, ok);
    if (!ok) return nullptr;
    return guarded([&] {
        return reinterpret_cast<PyObject*>(new_segment(ps::segment::open_or_create(std::string_view(name, len), size, mode, t)));
    });
}

PyObject* seg_open(PyObject*, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "timeout", nullptr};
    const char* name;
    Py_ssize_t len;
    PyObject* timeout = nullptr;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s#|O:open", const_cast<char**>(kwlist), &name, &len, &timeout)) return nullptr;
    bool ok;
    const auto t = to_ms(timeout, ok);
    if (!ok) return nullptr;
    // A creator still setting the segment up is waited for without the GIL,
    // in slices, with Python's signals checked between them (Ctrl-C), until
    // the timeout (None: for as long as it takes).
    const time_point deadline = t == std::chrono::milliseconds::max() ? time_point::max() : steady::now() + t;
    return guarded([&]() -> PyObject* {
        for (;;) {
            const auto left = deadline == time_point::max() ? std::chrono::milliseconds(slice)
                                                            : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
            const auto wait = std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(slice));
            std::optional<ps::segment> s;
            std::exception_ptr failure;
            Py_BEGIN_ALLOW_THREADS
            try {
                s.emplace(ps::segment::open(std::string_view(name, len), wait));
            } catch (...) {
                failure = std::current_exception();
            }
            Py_END_ALLOW_THREADS
            if (!failure) return reinterpret_cast<PyObject*>(new_segment(std::move(*s)));
            try {
                std::rethrow_exception(failure);
            } catch (const ps::error& e) {
                if (e.code_value() != ps::errc::timed_out || steady::now() >= deadline) throw;
            }
            if (PyErr_CheckSignals() < 0) return nullptr;
        }
    });
}

PyObject* seg_anonymous(PyObject*, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"size", nullptr};
    PyObject* size_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:anonymous", const_cast<char**>(kwlist), &size_obj)) return nullptr;
    std::size_t size;
    if (!parse_size(size_obj, size, "size")) return nullptr;
    return guarded([&] { return reinterpret_cast<PyObject*>(new_segment(ps::segment::anonymous(size))); });
}

PyObject* seg_remove(PyObject*, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", nullptr};
    const char* name;
    Py_ssize_t len;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s#:remove", const_cast<char**>(kwlist), &name, &len)) return nullptr;
    return guarded([&] { return PyBool_FromLong(ps::segment::remove(std::string_view(name, len))); });
}

PyObject* seg_valid_name(PyObject*, PyObject* arg) {
    Py_ssize_t len;
    const char* s = PyUnicode_AsUTF8AndSize(arg, &len);
    if (s == nullptr) return nullptr;
    return PyBool_FromLong(ps::segment::valid_name(std::string_view(s, len)));
}

SegmentObj* seg(PyObject* self) { return reinterpret_cast<SegmentObj*>(self); }

/// Removes the segment's name if this process created it (once); the
/// mapping stays while objects of it are alive here.
PyObject* seg_close(PyObject* self, PyObject*) {
    SegmentObj* s = seg(self);
    if (s->closed) Py_RETURN_NONE;
    s->closed = true;
    return guarded([&] {
        if (s->seg->is_owner() && s->creator == self_pid() && !s->seg->name().empty() && !s->seg->is_stale())
            ps::segment::remove(s->seg->name());
        s->seg->disown();
        Py_RETURN_NONE;
    });
}
PyObject* seg_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* seg_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
    PyObject* r = seg_close(self, nullptr);
    if (r == nullptr) return nullptr;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}
PyObject* seg_get_name(PyObject* self, void*) {
    const std::string& n = seg(self)->seg->name();
    if (n.empty()) Py_RETURN_NONE;
    return decode(n);
}
PyObject* seg_get_size(PyObject* self, void*) { return PyLong_FromSize_t(seg(self)->seg->size()); }
PyObject* seg_get_owner(PyObject* self, void*) { return PyBool_FromLong(seg(self)->seg->is_owner()); }
PyObject* seg_get_closed(PyObject* self, void*) { return PyBool_FromLong(seg(self)->closed); }
PyObject* seg_get_timeout(PyObject* self, void*) {
    return PyFloat_FromDouble(static_cast<double>(seg(self)->seg->timeout().count()) / 1000.0);
}
int seg_set_timeout(PyObject* self, PyObject* v, void*) {
    bool ok;
    const auto t = to_ms(v, ok);
    if (!ok) return -1;
    seg(self)->seg->set_timeout(t);
    return 0;
}
PyObject* seg_free_memory(PyObject* self, PyObject*) {
    return guarded([&] { return PyLong_FromSize_t(seg(self)->seg->free_memory()); });
}
PyObject* seg_disown(PyObject* self, PyObject*) {
    seg(self)->seg->disown();
    Py_RETURN_NONE;
}
PyObject* seg_is_stale(PyObject* self, PyObject*) {
    return guarded([&] { return PyBool_FromLong(seg(self)->seg->is_stale()); });
}
PyObject* seg_contains(PyObject* self, PyObject* arg) {
    Py_ssize_t len;
    const char* s = PyUnicode_AsUTF8AndSize(arg, &len);
    if (s == nullptr) return nullptr;
    return guarded([&] { return PyBool_FromLong(seg(self)->seg->contains(std::string_view(s, len))); });
}
/// seg.series(family): the children of the family `family` in the segment,
/// whichever process made them: [(name, label_names, label_values, exported)],
/// read through segment_view (no lock; values not needed but read).
PyObject* seg_series(PyObject* self, PyObject* arg) {
    Py_ssize_t len;
    const char* f = PyUnicode_AsUTF8AndSize(arg, &len);
    if (f == nullptr) return nullptr;
    const std::string prefix = std::string(f, static_cast<std::size_t>(len)) + "{";
    return guarded([&]() -> PyObject* {
        std::vector<ps::object_info> objs;
        {
            const auto view = ps::segment_view::of(*seg(self)->seg);
            objs = view.objects();
        }
        PyObject* list = PyList_New(0);
        if (list == nullptr) return nullptr;
        for (const auto& o : objs) {
            if (o.name.compare(0, prefix.size(), prefix) != 0 || o.label.empty()) continue;
            PyObject* values = PyTuple_New(static_cast<Py_ssize_t>(o.label_values.size()));
            if (values == nullptr) {
                Py_DECREF(list);
                return nullptr;
            }
            for (std::size_t i = 0; i < o.label_values.size(); ++i) {
                PyObject* v = PyUnicode_DecodeUTF8(o.label_values[i].data(), static_cast<Py_ssize_t>(o.label_values[i].size()),
                                                   "surrogateescape");
                if (v == nullptr) {
                    Py_DECREF(values);
                    Py_DECREF(list);
                    return nullptr;
                }
                PyTuple_SET_ITEM(values, static_cast<Py_ssize_t>(i), v);
            }
            PyObject* item = Py_BuildValue("(NNNO)", decode(o.name), decode(o.label), values, o.exported ? Py_True : Py_False);
            if (item == nullptr || PyList_Append(list, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(list);
                return nullptr;
            }
            Py_DECREF(item);
        }
        return list;
    });
}
int seg_sq_contains(PyObject* self, PyObject* arg) {
    PyObject* r = seg_contains(self, arg);
    if (r == nullptr) return -1;
    const int found = r == Py_True;
    Py_DECREF(r);
    return found;
}
PyObject* seg_reduce(PyObject* self, PyObject*) {
    const std::string& n = seg(self)->seg->name();
    if (n.empty()) {
        PyErr_SetString(PyExc_TypeError,
                        "procsafe: an anonymous segment cannot be pickled (only fork()ed children inherit it); use a named one");
        return nullptr;
    }
    PyObject* f = procsafe_attr("_attach_segment");
    if (f == nullptr) return nullptr;
    return Py_BuildValue("N(s)", f, n.c_str());
}
PyObject* seg_repr(PyObject* self) {
    SegmentObj* s = seg(self);
    return PyUnicode_FromFormat("<procsafe.Segment '%s', %zu bytes%s>", segment_name(s).c_str(), s->seg->size(),
                                s->seg->is_owner() ? ", owner" : "");
}

// ----- objects by name

/// Monitoring metadata from keyword arguments; the strings live here.
struct meta_args {
    PyObject* help = nullptr;
    PyObject* unit = nullptr;
    PyObject* kind = nullptr;
    PyObject* labels = nullptr;
    std::deque<std::string> strings;
    ps::metadata m;
    bool any = false;

    std::string_view keep(PyObject* o, const char* what, bool& ok) {
        Py_ssize_t len;
        const char* s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &len) : nullptr;
        if (s == nullptr) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "procsafe: %s must be a str", what);
            ok = false;
            return {};
        }
        strings.emplace_back(s, static_cast<std::size_t>(len));
        return strings.back();
    }

    bool build();
};

bool meta_args::build() {
    bool ok = true;
    if (help && help != Py_None) m.help = keep(help, "help", ok), any = true;
    if (ok && unit && unit != Py_None) m.unit = keep(unit, "unit", ok), any = true;
    if (ok && kind && kind != Py_None) {
        const std::string_view k = keep(kind, "kind", ok);
        any = true;
        if (ok) {
            if (k == "counter") m.type = ps::metric_type::counter;
            else if (k == "gauge") m.type = ps::metric_type::gauge;
            else if (k == "histogram") m.type = ps::metric_type::histogram;
            else if (k == "none") m.type = ps::metric_type::none;
            else if (k == "auto" || k == "automatic") m.type = ps::metric_type::automatic;
            else {
                set_error(ps::errc::invalid_argument, {}, {}, "kind is \"counter\", \"gauge\", \"histogram\" or \"none\"");
                ok = false;
            }
        }
    }
    if (ok && labels && labels != Py_None) {
        any = true;
        if (PyUnicode_Check(labels)) {
            m.label = keep(labels, "labels", ok);
        } else if (PyDict_Check(labels) && PyDict_Size(labels) == 1) {
            Py_ssize_t pos = 0;
            PyObject *key, *values;
            PyDict_Next(labels, &pos, &key, &values);
            m.label = keep(key, "a label name", ok);
            PyObject* seq = ok ? PySequence_Fast(values, "procsafe: a label's values are a sequence of str") : nullptr;
            if (seq == nullptr) ok = false;
            for (Py_ssize_t i = 0; ok && i < PySequence_Fast_GET_SIZE(seq); ++i)
                m.label_values.push_back(keep(PySequence_Fast_GET_ITEM(seq, i), "a label value", ok));
            Py_XDECREF(seq);
        } else {
            PyErr_SetString(PyExc_TypeError,
                            "procsafe: labels is a label name (str) or {name: [one value per element]} (a counter_array's)");
            ok = false;
        }
    }
    return ok;
}

/// The object named `name`: found (create false: unpickling), or found or constructed from a.
/// The most series a family made from Python holds (its children are never destroyed).
constexpr std::size_t max_family_series = 10000;

template <class C, class... A>
C& obtain(SegmentObj* s, std::string_view name, const meta_args* meta, bool create, A&&... a) {
    if (!create) return s->seg->find<C>(name);
    if constexpr (sizeof...(A) == 0 && (ps::detail::variable_size<C> || !std::is_default_constructible_v<C>)) {
        throw ps::error(ps::errc::invalid_argument, s->seg->name(), name, "constructed without its size");
    } else {
        if constexpr (!ps::detail::is_array_kind(ps::detail::object_traits<C>::facts().kind)) {
            if (meta != nullptr && !meta->m.label.empty()) {
                // A label set on a single series: a child of the family named
                // before its '{', made by procsafe::family (its bound, its rules),
                // so that the exposition gathers it with its siblings.
                const auto brace = name.find('{');
                const std::string_view family_name = name.substr(0, brace);
                const std::vector<std::string_view> label_names = ps::detail::split_labels(meta->m.label);
                const std::string series = ps::detail::series_name(family_name, label_names, meta->m.label_values);
                if (brace == std::string_view::npos || series != name) {
                    throw ps::error(ps::errc::invalid_argument, s->seg->name(), name,
                                    "a series with a label set is named FAMILY{name=\"value\",...}, as its labels make it: " +
                                        ps::detail::escape_bytes(series));
                }
                ps::metadata fm = meta->m;
                fm.label = {};
                fm.label_values = {};
                ps::family<C> f(*s->seg, family_name, label_names, fm, max_family_series);
                return f.labels(meta->m.label_values, std::forward<A>(a)...);
            }
        }
        if (meta != nullptr && meta->any) return s->seg->find_or_construct<C>(name, meta->m, std::forward<A>(a)...);
        return s->seg->find_or_construct<C>(name, std::forward<A>(a)...);
    }
}

PyObject* wrap(PyTypeObject* tp, void* p, PyObject* self, PyObject* name, int k, int t) {
    return reinterpret_cast<PyObject*>(new_handle(tp, p, self, name, k, t));
}

/// The object kinds a Segment makes or finds; `create` false: find only
/// (unpickling), args ignored.
struct request {
    SegmentObj* s;
    PyObject* self;
    PyObject* name;
    std::string_view name_sv;
    meta_args* meta;
    bool create;
};

PyObject* make_counter(request& r, int k, int t, PyObject* initial) {
    return dispatch(t, [&]<class T>() -> PyObject* {
        T init{};
        if (r.create && initial != nullptr && !from_py(initial, init)) return nullptr;
        if (k == k_atomic) return wrap(g_types[k][t], &obtain<ps::atomic_counter<T>>(r.s, r.name_sv, r.meta, r.create, init), r.self, r.name, k, t);
        return wrap(g_types[k][t], &obtain<ps::mutex_counter<T>>(r.s, r.name_sv, r.meta, r.create, init), r.self, r.name, k, t);
    });
}

PyObject* make_array(request& r, int k, int t, std::size_t n, ps::array_layout layout, PyObject* initial) {
    return dispatch(t, [&]<class T>() -> PyObject* {
        T init{};
        if (r.create && initial != nullptr && !from_py(initial, init)) return nullptr;
        if (k == k_atomic_array) {
            auto& a = r.create ? obtain<ps::counter_array<T, ps::atomic_sync>>(r.s, r.name_sv, r.meta, true, n, layout, init)
                               : obtain<ps::counter_array<T, ps::atomic_sync>>(r.s, r.name_sv, r.meta, false);
            return wrap(g_types[k][t], &a, r.self, r.name, k, t);
        }
        auto& a = r.create ? obtain<ps::counter_array<T, ps::mutex_sync>>(r.s, r.name_sv, r.meta, true, n, layout, init)
                           : obtain<ps::counter_array<T, ps::mutex_sync>>(r.s, r.name_sv, r.meta, false);
        return wrap(g_types[k][t], &a, r.self, r.name, k, t);
    });
}

PyObject* make_slotted(request& r, int k, int t, std::optional<std::size_t> slots, ps::shard_strategy strategy,
                       ps::gauge_aggregation how = ps::gauge_aggregation::livesum) {
    return dispatch(t, [&]<class T>() -> PyObject* {
        if constexpr (!std::is_integral_v<T>) {
            if (k == k_sharded) return nullptr;  // refused by parse_vt
        }
        if constexpr (std::is_integral_v<T>) {
            if (k == k_sharded) {
                using C = ps::sharded_counter<T>;
                auto& c = !r.create ? obtain<C>(r.s, r.name_sv, r.meta, false)
                                    : obtain<C>(r.s, r.name_sv, r.meta, true, slots.value_or(C::default_slots()), strategy);
                return wrap(g_types[k][t], &c, r.self, r.name, k, t);
            }
        }
        using C = ps::live_gauge<T>;
        auto& c = !r.create ? obtain<C>(r.s, r.name_sv, r.meta, false)
                            : obtain<C>(r.s, r.name_sv, r.meta, true, slots.value_or(C::default_slots), how);
        if (r.create && c.aggregation() != how) {
            throw ps::error(ps::errc::type_mismatch, r.s->seg->name(), r.name_sv,
                            std::string("a live_gauge aggregated as ") + (ps::aggregation_name(c.aggregation()) ? ps::aggregation_name(c.aggregation()) : "?") +
                                ", not " + ps::aggregation_name(how));
        }
        return wrap(g_types[k][t], &c, r.self, r.name, k, t);
    });
}

bool begin(request& r, PyObject* self, PyObject* name, meta_args* meta, bool create) {
    r.s = seg(self);
    r.self = self;
    r.name = name;
    r.meta = meta;
    r.create = create;
    Py_ssize_t len;
    const char* s = PyUnicode_AsUTF8AndSize(name, &len);
    if (s == nullptr) return false;
    r.name_sv = std::string_view(s, static_cast<std::size_t>(len));
    return meta == nullptr || meta->build();
}

#define PS_META_KW "help", "unit", "kind", "labels"

PyObject* seg_atomic_or_mutex(PyObject* self, PyObject* args, PyObject* kw, int k) {
    static const char* kwlist[] = {"name", "type", "initial", PS_META_KW, nullptr};
    PyObject *name, *type = nullptr, *initial = nullptr;
    meta_args meta;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|OO$OOOO", const_cast<char**>(kwlist), &name, &type, &initial, &meta.help,
                                     &meta.unit, &meta.kind, &meta.labels))
        return nullptr;
    int t;
    request r;
    if (!parse_vt(type, t, false) || !begin(r, self, name, &meta, true)) return nullptr;
    return guarded([&] { return make_counter(r, k, t, initial); });
}
PyObject* seg_atomic_counter(PyObject* self, PyObject* args, PyObject* kw) { return seg_atomic_or_mutex(self, args, kw, k_atomic); }
PyObject* seg_mutex_counter(PyObject* self, PyObject* args, PyObject* kw) { return seg_atomic_or_mutex(self, args, kw, k_mutex); }

bool parse_slots(PyObject* o, std::optional<std::size_t>& out) {
    if (o == nullptr || o == Py_None) return true;
    std::size_t n;
    if (!parse_size(o, n, "slots")) return false;
    out = n;
    return true;
}

PyObject* seg_sharded_counter(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "type", "slots", "strategy", PS_META_KW, nullptr};
    PyObject *name, *type = nullptr, *slots_obj = nullptr;
    const char* strategy = "owned_slot";
    meta_args meta;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|O$OsOOOO", const_cast<char**>(kwlist), &name, &type, &slots_obj, &strategy,
                                     &meta.help, &meta.unit, &meta.kind, &meta.labels))
        return nullptr;
    int t;
    std::optional<std::size_t> slots;
    request r;
    if (!parse_vt(type, t, true) || !parse_slots(slots_obj, slots) || !begin(r, self, name, &meta, true)) return nullptr;
    const std::string_view st(strategy);
    ps::shard_strategy how = ps::shard_strategy::owned_slot;
    if (st == "per_cpu") how = ps::shard_strategy::per_cpu;
    else if (st == "per_process") how = ps::shard_strategy::per_process;
    else if (st != "owned_slot") {
        set_error(ps::errc::invalid_argument, {}, {}, "strategy is \"owned_slot\", \"per_cpu\" or \"per_process\"");
        return nullptr;
    }
    return guarded([&] { return make_slotted(r, k_sharded, t, slots, how); });
}

PyObject* seg_live_gauge(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "type", "slots", "aggregation", PS_META_KW, nullptr};
    PyObject *name, *type = nullptr, *slots_obj = nullptr, *how_obj = nullptr;
    meta_args meta;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|O$OOOOOO", const_cast<char**>(kwlist), &name, &type, &slots_obj, &how_obj,
                                     &meta.help, &meta.unit, &meta.kind, &meta.labels))
        return nullptr;
    int t;
    std::optional<std::size_t> slots;
    ps::gauge_aggregation how = ps::gauge_aggregation::livesum;
    if (how_obj != nullptr && how_obj != Py_None) {
        const char* h = PyUnicode_Check(how_obj) ? PyUnicode_AsUTF8(how_obj) : nullptr;
        bool found = false;
        for (unsigned i = 0; h != nullptr && i <= static_cast<unsigned>(ps::gauge_aggregation::max); ++i) {
            if (std::string_view(h) == ps::aggregation_name(static_cast<ps::gauge_aggregation>(i))) {
                how = static_cast<ps::gauge_aggregation>(i);
                found = true;
            }
        }
        if (!found) {
            if (!PyErr_Occurred()) {
                set_error(ps::errc::invalid_argument, {}, {},
                          "aggregation is \"livesum\", \"liveall\", \"livemin\", \"livemax\", \"all\", \"min\" or \"max\"");
            }
            return nullptr;
        }
    }
    request r;
    if (!parse_vt(type, t, false) || !parse_slots(slots_obj, slots) || !begin(r, self, name, &meta, true)) return nullptr;
    return guarded([&] { return make_slotted(r, k_live_gauge, t, slots, ps::shard_strategy::owned_slot, how); });
}

PyObject* seg_counter_array(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "n", "type", "initial", "sync", "layout", PS_META_KW, nullptr};
    PyObject *name, *n_obj, *type = nullptr, *initial = nullptr;
    const char* sync = "atomic";
    const char* layout = "padded";
    meta_args meta;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO|OO$ssOOOO", const_cast<char**>(kwlist), &name, &n_obj, &type, &initial, &sync,
                                     &layout, &meta.help, &meta.unit, &meta.kind, &meta.labels))
        return nullptr;
    int t;
    std::size_t n;
    request r;
    if (!parse_vt(type, t, false) || !parse_size(n_obj, n, "n") || !begin(r, self, name, &meta, true)) return nullptr;
    const std::string_view sy(sync), lay(layout);
    if ((sy != "atomic" && sy != "mutex") || (lay != "padded" && lay != "packed")) {
        set_error(ps::errc::invalid_argument, {}, {}, "sync is \"atomic\" or \"mutex\"; layout \"padded\" or \"packed\"");
        return nullptr;
    }
    return guarded([&] {
        return make_array(r, sy == "atomic" ? k_atomic_array : k_mutex_array, t, n,
                          lay == "padded" ? ps::array_layout::padded : ps::array_layout::packed, initial);
    });
}

PyObject* seg_histogram(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "bounds", "rows", PS_META_KW, nullptr};
    PyObject *name, *bounds_obj, *rows_obj = nullptr;
    meta_args meta;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO|$OOOOO", const_cast<char**>(kwlist), &name, &bounds_obj, &rows_obj, &meta.help,
                                     &meta.unit, &meta.kind, &meta.labels))
        return nullptr;
    std::vector<double> bounds;
    PyObject* seq = PySequence_Fast(bounds_obj, "procsafe: bounds are a sequence of numbers");
    if (seq == nullptr) return nullptr;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i) {
        const double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (d == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return nullptr;
        }
        bounds.push_back(d);
    }
    Py_DECREF(seq);
    std::optional<std::size_t> rows;
    request r;
    if (!parse_slots(rows_obj, rows) || !begin(r, self, name, &meta, true)) return nullptr;
    return guarded([&] {
        auto& h = obtain<ps::histogram>(r.s, r.name_sv, r.meta, true, bounds, rows.value_or(ps::histogram::default_rows()));
        return wrap(g_single[k_histogram], &h, self, name, k_histogram, -1);
    });
}

template <class C, int K>
PyObject* seg_counted(PyObject* self, PyObject* args, PyObject* kw) {
    static const char* kwlist[] = {"name", "count", PS_META_KW, nullptr};
    PyObject *name, *count_obj;
    meta_args meta;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO|$OOOO", const_cast<char**>(kwlist), &name, &count_obj, &meta.help, &meta.unit,
                                     &meta.kind, &meta.labels))
        return nullptr;
    std::ptrdiff_t count;
    request r;
    if (!parse_count(count_obj, count) || !begin(r, self, name, &meta, true)) return nullptr;
    return guarded([&] { return wrap(g_single[K], &obtain<C>(r.s, r.name_sv, r.meta, true, count), self, name, K, -1); });
}

/// _find(kind, name, type): the object made by any process (unpickling).
PyObject* seg_find(PyObject* self, PyObject* args) {
    const char* kind_s;
    PyObject *name, *type;
    if (!PyArg_ParseTuple(args, "sUO:_find", &kind_s, &name, &type)) return nullptr;
    int k = -1;
    for (int i = 0; i < k_value; ++i)
        if (std::string_view(kind_s) == kind_names[i]) k = i;
    if (k < 0) {
        set_error(ps::errc::invalid_argument, {}, {}, std::string("unknown kind ") + kind_s);
        return nullptr;
    }
    int t = -1;
    if (k != k_histogram && k != k_latch && k != k_barrier && !parse_vt(type, t, k == k_sharded)) return nullptr;
    request r;
    if (!begin(r, self, name, nullptr, false)) return nullptr;
    return guarded([&]() -> PyObject* {
        switch (k) {
            case k_atomic:
            case k_mutex: return make_counter(r, k, t, nullptr);
            case k_atomic_array:
            case k_mutex_array: return make_array(r, k, t, 0, ps::array_layout::padded, nullptr);
            case k_sharded:
            case k_live_gauge: return make_slotted(r, k, t, std::nullopt, ps::shard_strategy::owned_slot);
            case k_histogram: return wrap(g_single[k], &obtain<ps::histogram>(r.s, r.name_sv, nullptr, false), self, name, k, -1);
            case k_latch: return wrap(g_single[k], &obtain<ps::latch>(r.s, r.name_sv, nullptr, false), self, name, k, -1);
            default: return wrap(g_single[k], &obtain<ps::barrier>(r.s, r.name_sv, nullptr, false), self, name, k, -1);
        }
    });
}

int typecode_vt(int code) {
    switch (code) {
        case 'b': return i8;
        case 'B': return u8;
        case 'h': return i16;
        case 'H': return u16;
        case 'i': return sizeof(int) == 4 ? i32 : i64;
        case 'I': return sizeof(unsigned) == 4 ? u32 : u64;
        case 'l': return sizeof(long) == 8 ? i64 : i32;
        case 'L': return sizeof(unsigned long) == 8 ? u64 : u32;
        case 'q': return i64;
        case 'Q': return u64;
        case 'f': return f32;
        case 'd': return f64;
        default: return -1;
    }
}

/// _value(name, typecode, initial, lock, create): a Value's atomic counter
/// (not exported: metric type none), with `lock` (None: a RawValue).
PyObject* seg_value(PyObject* self, PyObject* args) {
    PyObject *name, *initial, *lock;
    int code, create;
    if (!PyArg_ParseTuple(args, "UCOOp:_value", &name, &code, &initial, &lock, &create)) return nullptr;
    const int t = typecode_vt(code);
    if (t < 0) {
        set_error(ps::errc::invalid_argument, {}, {},
                  "typecode must be one of b B h H i I l L q Q f d (as multiprocessing.Value's), not " + std::string(1, static_cast<char>(code)));
        return nullptr;
    }
    if (lock != Py_None && Py_TYPE(lock) != g_lock_type) {
        PyErr_SetString(PyExc_TypeError, "procsafe: lock is True, False, or a procsafe Lock/RLock");
        return nullptr;
    }
    meta_args meta;
    meta.any = true;
    meta.m.type = ps::metric_type::none;
    request r;
    if (!begin(r, self, name, nullptr, create != 0)) return nullptr;
    r.meta = &meta;
    return guarded([&] {
        return dispatch(t, [&]<class T>() -> PyObject* {
            T init{};
            if (create && initial != Py_None && !from_py_wrapping(initial, init)) return nullptr;
            auto& c = obtain<ps::atomic_counter<T>>(r.s, r.name_sv, r.meta, create != 0, init);
            return new_value(self, name, &c, t, static_cast<char>(code), lock == Py_None ? nullptr : lock);
        });
    });
}

/// _lock(name, recursive, create): a Lock or RLock (not exported).
PyObject* seg_lock(PyObject* self, PyObject* args) {
    PyObject* name;
    int recursive, create;
    if (!PyArg_ParseTuple(args, "Upp:_lock", &name, &recursive, &create)) return nullptr;
    meta_args meta;
    meta.any = true;
    meta.m.type = ps::metric_type::none;
    request r;
    if (!begin(r, self, name, nullptr, create != 0)) return nullptr;
    r.meta = &meta;
    return guarded([&] { return new_lock(self, name, obtain<lock_counter>(r.s, r.name_sv, r.meta, create != 0), recursive != 0); });
}

#define PS_KW(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f)), METH_VARARGS | METH_KEYWORDS
#define PS_META_DOC "help=None, unit=None, kind=None, labels=None"

PyMethodDef segment_methods[] = {
    {"create", PS_KW(seg_create) | METH_STATIC,
     PS_DOC("create(name, size, mode=0o600, *, replace_orphan=False, timeout=2.0)",
            "Creates a named segment of at least size bytes (exclusively; its pages reserved). The process that\n"
            "creates it removes it on close() (or when the Segment is collected); a forked child never does.\n"
            "replace_orphan=True: a segment of that name whose creator is gone (crashed, killed, exited without\n"
            "removing it) is replaced; one whose creator still runs raises SegmentExists naming its pid.")},
    {"info", PS_KW(seg_info) | METH_STATIC,
     PS_DOC("info(name)",
            "{'name', 'size', 'objects', 'creator_pid', 'creator_alive', 'created_ns'}: facts about the named segment,\n"
            "read-only (creator_alive: what replace_orphan judges; True when it cannot tell).")},
    {"open", PS_KW(seg_open) | METH_STATIC,
     PS_DOC("open(name, timeout=2.0)",
            "Opens a named segment made by procsafe, waiting up to timeout seconds (None: no limit) for a creator\n"
            "still setting it up.")},
    {"open_or_create", PS_KW(seg_open_or_create) | METH_STATIC,
     PS_DOC("open_or_create(name, size, mode=0o600, timeout=2.0)", "Opens the named segment, or creates it.")},
    {"anonymous", PS_KW(seg_anonymous) | METH_STATIC,
     PS_DOC("anonymous(size)", "A segment without a name that fork()ed children inherit; its objects cannot be pickled.")},
    {"remove", PS_KW(seg_remove) | METH_STATIC,
     PS_DOC("remove(name)", "Removes the named segment; returns whether there was one. Mappings stay valid.")},
    {"valid_name", seg_valid_name, METH_O | METH_STATIC,
     PS_DOC("valid_name(name, /)", "True for a valid segment name: a letter, then letters, digits, '_', '-', '.'.")},
    {"close", seg_close, METH_NOARGS,
     PS_DOC("close($self, /)",
            "Removes the segment's name if this process created it. Objects taken from it stay usable here.")},
    {"__enter__", seg_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(seg_exit)), METH_FASTCALL, "close()"},
    {"free_memory", seg_free_memory, METH_NOARGS, PS_DOC("free_memory($self, /)", "Bytes still free for objects.")},
    {"disown", seg_disown, METH_NOARGS, PS_DOC("disown($self, /)", "Keeps the segment after close().")},
    {"is_stale", seg_is_stale, METH_NOARGS,
     PS_DOC("is_stale($self, /)", "True when the name no longer refers to this mapping (removed, perhaps recreated).")},
    {"contains", seg_contains, METH_O, PS_DOC("contains($self, name, /)", "True when an object of that name exists.")},
    {"series", seg_series, METH_O,
     PS_DOC("series($self, family, /)",
            "[(name, label_names, label_values, exported)]: the children of the labelled family named family (objects\n"
            "named family{...}), whichever process made them; label_names as stored (\"a,b\"), exported False for a\n"
            "child taken out of the exposition. Read without a lock (a child being made may be missing).")},
    {"__reduce__", seg_reduce, METH_NOARGS, "Pickles as the segment's name."},
    {"atomic_counter", PS_KW(seg_atomic_counter),
     PS_DOC("atomic_counter($self, /, name, type='int64', initial=0, *, " PS_META_DOC ")",
            "The lock-free counter named name, made if no process has.")},
    {"mutex_counter", PS_KW(seg_mutex_counter),
     PS_DOC("mutex_counter($self, /, name, type='int64', initial=0, *, " PS_META_DOC ")",
            "The counter under a robust lock named name, made if no process has.")},
    {"sharded_counter", PS_KW(seg_sharded_counter),
     PS_DOC("sharded_counter($self, /, name, type='int64', *, slots=None, strategy='owned_slot', " PS_META_DOC ")",
            "The sharded counter named name (integer types).")},
    {"live_gauge", PS_KW(seg_live_gauge),
     PS_DOC("live_gauge($self, /, name, type='int64', *, slots=None, " PS_META_DOC ")", "The live gauge named name (integer types).")},
    {"counter_array", PS_KW(seg_counter_array),
     PS_DOC("counter_array($self, /, name, n, type='int64', initial=0, *, sync='atomic', layout='padded', " PS_META_DOC ")",
            "The array of n counters named name; labels={'code': ['200', '404', ...]} names its elements.")},
    {"histogram", PS_KW(seg_histogram),
     PS_DOC("histogram($self, /, name, bounds, *, rows=None, " PS_META_DOC ")", "The histogram named name.")},
    {"latch", PS_KW((seg_counted<ps::latch, k_latch>)), PS_DOC("latch($self, /, name, count, *, " PS_META_DOC ")", "The latch named name.")},
    {"barrier", PS_KW((seg_counted<ps::barrier, k_barrier>)),
     PS_DOC("barrier($self, /, name, count, *, " PS_META_DOC ")", "The barrier named name.")},
    {"_find", seg_find, METH_VARARGS, "_find(kind, name, type): an existing object (unpickling)."},
    {"_value", seg_value, METH_VARARGS, "_value(name, typecode, initial, lock, create)"},
    {"_lock", seg_lock, METH_VARARGS, "_lock(name, recursive, create)"},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef segment_getset[] = {
    {"name", seg_get_name, nullptr, "The segment's name; None for an anonymous one.", nullptr},
    {"size", seg_get_size, nullptr, "Bytes mapped, header included.", nullptr},
    {"is_owner", seg_get_owner, nullptr, "True for the Segment that created it (and will remove it).", nullptr},
    {"closed", seg_get_closed, nullptr, "True after close().", nullptr},
    {"timeout", seg_get_timeout, seg_set_timeout, "Seconds a lookup waits for a peer still constructing an object.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMemberDef segment_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SegmentObj, weakrefs), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

bool make_segment_type() {
    type_names().push_back("procsafe.Segment");
    PyType_Slot slots[] = {
        {Py_tp_dealloc, reinterpret_cast<void*>(segment_dealloc)},
        {Py_tp_repr, reinterpret_cast<void*>(seg_repr)},
        {Py_tp_methods, segment_methods},
        {Py_tp_getset, segment_getset},
        {Py_tp_members, segment_members},
        {Py_sq_contains, reinterpret_cast<void*>(seg_sq_contains)},
        {Py_tp_doc, const_cast<char*>("A mapping of shared memory holding named procsafe objects (procsafe::segment).")},
        {0, nullptr},
    };
    PyType_Spec spec{type_names().back().c_str(), sizeof(SegmentObj), 0,
                     Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE, slots};
    g_segment_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec));
    return g_segment_type != nullptr;
}

// ---------------------------------------------------------------- module

struct error_def {
    ps::errc code;
    const char* name;
    PyObject* builtin;  // also derives from this, or nullptr
};

bool make_errors(PyObject* m) {
    g_error = PyErr_NewExceptionWithDoc("procsafe.Error",
                                        "Base of procsafe's errors; one subclass per procsafe::errc. The message names the "
                                        "segment and the object (also .segment, .object, .detail).",
                                        nullptr, nullptr);
    if (g_error == nullptr || PyModule_AddObjectRef(m, "Error", g_error) < 0) return false;
    const error_def defs[] = {
        {ps::errc::segment_not_found, "SegmentNotFound", PyExc_FileNotFoundError},
        {ps::errc::segment_exists, "SegmentExists", PyExc_FileExistsError},
        {ps::errc::object_not_found, "ObjectNotFound", PyExc_LookupError},
        {ps::errc::object_exists, "ObjectExists", nullptr},
        {ps::errc::type_mismatch, "TypeMismatch", PyExc_TypeError},
        {ps::errc::bad_magic, "BadMagic", nullptr},
        {ps::errc::incompatible_layout, "IncompatibleLayout", nullptr},
        {ps::errc::invalid_name, "InvalidName", PyExc_ValueError},
        {ps::errc::out_of_space, "OutOfSpace", nullptr},
        {ps::errc::permission_denied, "PermissionDenied", PyExc_PermissionError},
        {ps::errc::timed_out, "TimedOut", PyExc_TimeoutError},
        {ps::errc::owner_died, "OwnerDied", nullptr},
        {ps::errc::invalid_argument, "InvalidArgument", PyExc_ValueError},
        {ps::errc::out_of_range, "OutOfRange", PyExc_IndexError},
        {ps::errc::unsupported, "Unsupported", nullptr},
        {ps::errc::system_error, "SystemFailure", PyExc_OSError},
    };
    for (const auto& d : defs) {
        PyObject* bases = d.builtin ? PyTuple_Pack(2, g_error, d.builtin) : PyTuple_Pack(1, g_error);
        if (bases == nullptr) return false;
        const std::string full = std::string("procsafe.") + d.name;
        const std::string doc = std::string("procsafe::errc::") + ps::error_category().message(static_cast<int>(d.code)) + ".";
        PyObject* e = PyErr_NewExceptionWithDoc(full.c_str(), doc.c_str(), bases, nullptr);
        Py_DECREF(bases);
        if (e == nullptr || PyModule_AddObjectRef(m, d.name, e) < 0) return false;
        g_errors[static_cast<int>(d.code)] = e;
    }
    return true;
}

/// exposition(segments): the Prometheus text of these segments, as `procsafe
/// export` writes it (the same code), and its warnings. Read through
/// segment_view: read-only, validated, without the GIL.
PyObject* mod_exposition(PyObject*, PyObject* arg) {
    PyObject* seq = PySequence_Fast(arg, "procsafe: exposition(segments): segments is a sequence of segment names");
    if (seq == nullptr) return nullptr;
    std::vector<std::string> names;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i) {
        PyObject* o = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t len;
        const char* s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &len) : nullptr;
        if (s == nullptr) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "procsafe: exposition(segments): a segment name is a str");
            return nullptr;
        }
        names.emplace_back(s, static_cast<std::size_t>(len));
    }
    Py_DECREF(seq);
    return guarded([&]() -> PyObject* {
        std::string text;
        std::vector<std::string> warnings;
        std::exception_ptr failure;
        Py_BEGIN_ALLOW_THREADS
        try {
            ps::prometheus_exposition e;
            for (const auto& n : names) e.add(ps::segment_view::open(n));
            text = e.str();
            warnings = e.warnings();
        } catch (...) {
            failure = std::current_exception();
        }
        Py_END_ALLOW_THREADS
        if (failure) std::rethrow_exception(failure);
        PyObject* w = list_of(warnings.size(), [&](std::size_t i) {
            return PyUnicode_DecodeUTF8(warnings[i].data(), static_cast<Py_ssize_t>(warnings[i].size()), "backslashreplace");
        });
        if (w == nullptr) return nullptr;
        return Py_BuildValue("(NN)", PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "strict"), w);
    });
}

PyMethodDef module_methods[] = {
    {"exposition", mod_exposition, METH_O,
     PS_DOC("exposition(segments, /)",
            "(text, warnings): the Prometheus text exposition of the named segments, as `procsafe export` writes it.")},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "procsafe._procsafe",
    "procsafe's C extension: segments and the objects in them, over the C++ headers. Use the package procsafe.", -1,
    module_methods, nullptr, nullptr, nullptr, nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__procsafe() {
    g_pid = static_cast<long>(::getpid());
    static const bool at_fork = [] {
        return ::pthread_atfork(nullptr, nullptr, [] {
            g_pid = static_cast<long>(::getpid());
            holders().clear();
        }) == 0;
    }();
    if (!at_fork) {
        PyErr_SetString(PyExc_RuntimeError, "procsafe: pthread_atfork failed");
        return nullptr;
    }
    PyObject* m = PyModule_Create(&module_def);
    if (m == nullptr) return nullptr;
    auto add_type = [&](const char* name, PyTypeObject* t) {
        return t != nullptr && PyModule_AddObjectRef(m, name, reinterpret_cast<PyObject*>(t)) == 0;
    };
    bool ok = make_errors(m) && make_segment_type() && make_types() && add_type("Segment", g_segment_type) &&
              add_type("SharedLock", g_lock_type) && add_type("Locked", g_locked_type) &&
              add_type("HistogramSnapshot", g_snapshot_type);
    if (ok) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (ok && PyDict_Next(g_bases, &pos, &key, &value)) ok = PyModule_AddObjectRef(m, PyUnicode_AsUTF8(key), value) == 0;
        PyObject* values = PyDict_New();
        for (int t = 0; ok && values && t < vt_count; ++t)
            ok = PyDict_SetItemString(values, vt_names[t], reinterpret_cast<PyObject*>(g_value_types[t])) == 0;
        ok = ok && values && PyModule_AddObject(m, "_value_types", values) == 0;
    }
    if (ok) {
        type_names().push_back("procsafe._procsafe._Noop");
        PyType_Slot slots[] = {
            {Py_tp_dealloc, reinterpret_cast<void*>(handle_dealloc)},
            {Py_tp_methods, noop_methods},
            {Py_tp_new, reinterpret_cast<void*>(noop_new)},
            {Py_tp_doc, const_cast<char*>("For benchmarks: noop() is a METH_NOARGS method of a type made as the counters' are.")},
            {0, nullptr},
        };
        PyType_Spec spec{type_names().back().c_str(), sizeof(Handle), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, slots};
        ok = add_type("_Noop", reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec)));
    }
    ok = ok && PyModule_AddIntConstant(m, "VERSION_MAJOR", PROCSAFE_VERSION_MAJOR) == 0 &&
         PyModule_AddIntConstant(m, "VERSION_MINOR", PROCSAFE_VERSION_MINOR) == 0 &&
         PyModule_AddIntConstant(m, "VERSION_PATCH", PROCSAFE_VERSION_PATCH) == 0;
    if (!ok) {
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
