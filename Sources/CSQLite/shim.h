#include <sqlite3.h>

// SQLITE_TRANSIENT is a cast of -1 to a function pointer, which Swift cannot
// import: this gives it a callable name.
static inline sqlite3_destructor_type airlock_sqlite_transient(void) {
    return SQLITE_TRANSIENT;
}
