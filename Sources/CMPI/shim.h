// Accessors for the Open MPI handles that Swift cannot import: each predefined handle is a macro
// taking the address of a global of incomplete type. static inline, so release builds inline them.
#ifndef DINO_CMPI_SHIM_H
#define DINO_CMPI_SHIM_H
#include <mpi.h>

static inline MPI_Comm dino_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm dino_mpi_comm_null(void) { return MPI_COMM_NULL; }

static inline MPI_Datatype dino_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype dino_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype dino_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype dino_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype dino_mpi_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Datatype dino_mpi_uint16(void) { return MPI_UINT16_T; }

static inline MPI_Op dino_mpi_op_sum(void) { return MPI_SUM; }
static inline MPI_Op dino_mpi_op_max(void) { return MPI_MAX; }
static inline MPI_Op dino_mpi_op_min(void) { return MPI_MIN; }

static inline void *dino_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *dino_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Request dino_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Info dino_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline MPI_Errhandler dino_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int dino_mpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline int dino_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int dino_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }

#endif
