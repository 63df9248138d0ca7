/* autograd/cpu/gau_layer.h: one FLASH-Quad layer (FLASH-pytorch's GAU, --model gau) of the CPU
 * model, h_out = h + layer(h), built from the FLASH layer's rooms (flash_layer.h): the norm
 * (no token shift), the projections with two offset-scale heads (q, k) and no rotary, the
 * quadratic attention alone over ONE group of the whole sequence (attn_quad with C = T, G = 1,
 * scores scaled by 1/T and the bias by sqrt(d)/T), and the gate/output room.
 * docs/model.md, "FLASH-Quad (--model gau)", gives the computation. */
#ifndef FLASH_GAU_LAYER_H
#define FLASH_GAU_LAYER_H
#include "flash_layer.h"

/* GAU's attention over the batch ls (layer_shape of a gau config: C = T, G = 1):
   sim_ij = (q_i . k_j + sqrt(d) bias[bucket(i - j)]) / T, att_i = sum_{j <= i} phi(sim_ij) v_j.
   bias_dist: scratch, T reals. */
AttnShape gau_attn_shape(const LayerShape *ls, const LayerParams *P, real *bias_dist);

/* The layer l over the activations a (cpu_model.h), as flash_layer_forward/backward: forward
   res[l] -> res[l+1]; backward turns a->d_res = dL/d res[l+1] into dL/d res[l] in place and
   adds the layer's weight gradients into D. */
void gau_layer_forward(const LayerShape *ls, const LayerParams *P, Acts *a, int l, const Prof *pf);
void gau_layer_backward(const LayerShape *ls, const LayerParams *P, LayerParams *D, Acts *a, int l,
                        const GemmScratch *ws, const Prof *pf);

#endif
